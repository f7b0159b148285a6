//! Data quality through the real entry points: the sample through the broker into a local
//! lake, then `alluvium dq report` (table and JSON); a rules file that quarantines by a
//! declared rule; a rule escalated past its threshold stopping the pipeline before anything
//! commits (in one process and in a two-process cluster); bad rules files naming the key.

use std::path::Path;

mod common;
use common::{alluvium, csv_rows, load_sample as load, stable_free_port, unique};

fn prefix(name: &str) -> String {
    format!("{}-", unique(name))
}

/// `alluvium run --until-idle` of `prefix` into a lake under `dir`, with `extra` arguments.
fn run(prefix: &str, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--topic-prefix".into(),
        prefix.into(),
        "--state".into(),
        dir.join("state").to_string_lossy().into_owned(),
        "--lake".into(),
        dir.join("lake").to_string_lossy().into_owned(),
        "--until-idle".into(),
    ];
    if !extra.contains(&"--epoch-records") {
        args.extend(["--epoch-records".into(), "200".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    alluvium(args).output().expect("running alluvium")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn report_of_the_sample_as_table_and_json() {
    let prefix = prefix("dqreport");
    load(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let out = run(&prefix, dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lake = dir.path().join("lake");

    let out = alluvium([
        "dq",
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "json",
        "--epochs",
        "100",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    // Newest epoch first; the orphan count of the last epoch is the final state.
    let last_orphans = results
        .iter()
        .find(|r| r["rule"] == "orphan_orders")
        .expect("orphan_orders results");
    assert_eq!(last_orphans["table_name"], "gold.fact_order_items");
    assert_eq!(last_orphans["checked"], 300);
    assert_eq!(last_orphans["failed"], 47);
    assert_eq!(last_orphans["threshold"], 15);
    assert_eq!(last_orphans["passed"], false);
    // Quarantine rules summed over every epoch equal the quarantine counts.
    let json_parse: i64 = results
        .iter()
        .filter(|r| r["table_name"] == "silver.orders" && r["rule"] == "json_parse")
        .map(|r| r["failed"].as_i64().unwrap())
        .sum();
    assert_eq!(json_parse, 12);
    let epochs: Vec<u64> = results
        .iter()
        .map(|r| r["epoch"].as_u64().unwrap())
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] >= w[1]), "{epochs:?}");
    assert!(results
        .iter()
        .all(|r| r["rule"] != "revenue_reconciles" || r["passed"] == true));

    let out = alluvium([
        "dq",
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--epochs",
        "1",
        "--failing",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap();
    for column in [
        "epoch",
        "table",
        "rule",
        "severity",
        "checked",
        "failed",
        "threshold",
        "passed",
    ] {
        assert!(header.contains(column), "{text}");
    }
    assert!(
        text.contains("orphan_orders") && text.contains("NO"),
        "{text}"
    );
    assert!(
        !text.contains("revenue_reconciles"),
        "passing rules are filtered: {text}"
    );
}

#[test]
fn a_declared_drop_rule_quarantines_under_its_name() {
    let prefix = prefix("dqdrop");
    load(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[rules]]
table = "silver.orders"
name = "at_most_two_items"
check = "range"
column = "item_count"
max = 2
severity = "drop"
"#,
    )
    .unwrap();
    let csv = dir.path().join("csv");
    let out = run(
        &prefix,
        dir.path(),
        &[
            "--dq-config",
            rules.to_str().unwrap(),
            "--export-csv",
            csv.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let orders = csv_rows(&csv.join("silver_orders.csv"), false);
    let item_count = 9; // column of silver.orders
    assert!(!orders.is_empty());
    assert!(
        orders
            .iter()
            .all(|o| o[item_count].parse::<i64>().unwrap() <= 2),
        "an order with more than two items reached silver"
    );
    let expected_orders = csv_rows(&common::case().join("expected/silver_orders.csv"), false);
    let dropped = expected_orders
        .iter()
        .filter(|o| o[item_count].parse::<i64>().unwrap() > 2)
        .count();
    assert!(
        dropped > 0,
        "the sample has orders with more than two items"
    );
    assert_eq!(orders.len() + dropped, expected_orders.len());
    let counts = csv_rows(&csv.join("quarantine_counts.csv"), false);
    let n: i64 = counts
        .iter()
        .find(|r| r[0] == "orders" && r[1] == "at_most_two_items")
        .map(|r| r[2].parse().unwrap())
        .expect("quarantined under the rule's name");
    // Every event of a dropped order is quarantined (the latest state never sees them).
    assert!(
        n as usize >= dropped,
        "{n} quarantined for {dropped} orders"
    );
}

#[test]
fn an_escalated_rule_stops_the_pipeline_before_the_epoch_commits() {
    let prefix = prefix("dqstop");
    load(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\ntable = \"gold.fact_order_items\"\nname = \"orphan_orders\"\nescalate = true\n",
    )
    .unwrap();
    // The whole sample in one epoch: 47 of 300 orders are orphans, past the 5 % threshold.
    let out = run(
        &prefix,
        dir.path(),
        &[
            "--dq-config",
            rules.to_str().unwrap(),
            "--epoch-records",
            "1000000",
            "--epoch-ms",
            "60000",
        ],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "the run should have failed");
    assert!(
        err.contains("orphan_orders")
            && err.contains("gold.fact_order_items")
            && err.contains("47 of 300 rows failed")
            && err.contains("threshold 15")
            && err.contains("is not committed"),
        "{err}"
    );
    // Nothing was committed: no table state, and no lake snapshot.
    assert!(!dir.path().join("state/tables/state.json").exists());
    let out = alluvium([
        "dq",
        "report",
        "--lake",
        dir.path().join("lake").to_str().unwrap(),
        "--format",
        "json",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(results.is_empty(), "{results:?}");
}

#[test]
fn an_escalated_rule_stops_every_process_of_a_cluster() {
    use std::io::Read;
    let prefix = prefix("dqcluster");
    load(&prefix);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\ntable = \"gold.fact_order_items\"\nname = \"orphan_orders\"\nescalate = true\n",
    )
    .unwrap();
    let port = stable_free_port().to_string();
    let state = dir.path().join("state");
    let lake = dir.path().join("lake");
    let mut children: Vec<std::process::Child> = (0..2)
        .map(|p| {
            alluvium([
                "run",
                "--topic-prefix",
                &prefix,
                "--state",
                state.to_str().unwrap(),
                "--lake",
                lake.to_str().unwrap(),
                "--until-idle",
                "--dq-config",
                rules.to_str().unwrap(),
                "--epoch-records",
                "1000000",
                "--epoch-ms",
                "60000",
                "--processes",
                "2",
                "--process",
                &p.to_string(),
                "--base-port",
                &port,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    // The gate runs on worker 0 (process 0); process 1 must stop too, not wait forever.
    let started = std::time::Instant::now();
    let mut statuses = vec![None, None];
    while statuses.iter().any(Option::is_none) {
        for (c, s) in children.iter_mut().zip(&mut statuses) {
            if s.is_none() {
                *s = c.try_wait().unwrap();
            }
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("the cluster did not stop within 120 s: {statuses:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let errors: Vec<String> = children
        .iter_mut()
        .map(|c| {
            let mut e = String::new();
            c.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            e
        })
        .collect();
    for (p, s) in statuses.iter().enumerate() {
        assert!(!s.unwrap().success(), "process {p} succeeded:\n{errors:?}");
    }
    assert!(
        errors[0].contains("orphan_orders") && errors[0].contains("is not committed"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("peer process"), "{}", errors[1]);
    assert!(!state.join("tables/state.json").exists());
    let out = alluvium([
        "dq",
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "json",
    ])
    .output()
    .unwrap();
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(results.is_empty(), "{results:?}");
}

#[test]
fn bad_rules_files_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        (
            "[[rules]]\ntable='silver.orders'\nname='x'\ncheck='range'\ncolumn='quantity'\nmax=3",
            "rules[0].column",
        ),
        (
            "[[rules]]\ntable='silver.orders'\nname='x'\ncheck='between'",
            "between",
        ),
        (
            "[[rules]]\ntable='gold.fact_order_items'\nname='orphan_order'\nescalate=true",
            "rules[0].name",
        ),
    ] {
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, text).unwrap();
        let out = alluvium(["dq", "rules", "--dq-config", rules.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        assert!(stderr(&out).contains(key), "{text}: {}", stderr(&out));
        // `run` refuses it before touching any service.
        let out = alluvium([
            "run",
            "--brokers",
            "127.0.0.1:1",
            "--dq-config",
            rules.to_str().unwrap(),
        ])
        .output()
        .unwrap();
        assert!(!out.status.success());
        assert!(stderr(&out).contains(key), "{text}: {}", stderr(&out));
    }
    let out = alluvium(["dq", "rules"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for rule in [
        "json_parse",
        "valid_email",
        "orphan_orders",
        "orphan_order_lines",
        "revenue_reconciles",
    ] {
        assert!(text.contains(rule), "{text}");
    }
}
