//! The medallion pipeline through the real broker: `alluvium fixture load` the public sample,
//! `alluvium run --until-idle --export-csv`, and compare every table with `expected/`:
//! streaming with small epochs on 2 workers, batch mode, and streaming with SIGKILLs.

use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{alluvium, assert_matches_expected, load_sample as load, ok};

fn unique(name: &str) -> String {
    format!("{}-", common::unique(name))
}

#[test]
fn streaming_and_batch_give_the_expected_tables() {
    let prefix = unique("med");
    load(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let (state, export) = (dir.path().join("stream"), dir.path().join("stream-csv"));
    ok([
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
    ok([
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
    let out = alluvium([
        "run",
        "--topic-prefix",
        &prefix,
        "--state",
        state.to_str().unwrap(),
        "--batch",
    ])
    .output()
    .unwrap();
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
        let mut child = alluvium(run_args(&["-w", if i % 2 == 0 { "1" } else { "2" }]))
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
    ok(args);
    assert_matches_expected(&export);
    let commits = std::fs::read_to_string(state.join("tables/commits.log")).unwrap();
    let epochs: Vec<u64> = commits.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "an epoch was committed twice"
    );
}
