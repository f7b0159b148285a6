//! Exactly-once against a real Kafka-protocol broker (started by `scripts/services.sh`):
//! the `alluvium keyed-stats` process is SIGKILLed at random points and restarted, with new
//! messages arriving in between; the final committed table must equal the table computed
//! from every produced message, each epoch committed once, each offset covered.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alluvium_connectors::kafka::admin::{end_offsets, ensure_topic};
use alluvium_connectors::kafka::producer::ReliableProducer;
use alluvium_connectors::kafka::KafkaConfig;
use alluvium_engine::demo::keyed_stats_reference;
use alluvium_engine::sinks::file::FileSink;
use alluvium_engine::PartitionId;
use rand::{Rng, SeedableRng};

mod common;
use common::{brokers, unique};

type Row = (String, i64, i64);

/// Produces `count` messages from `seed`; returns them.
fn produce(config: &KafkaConfig, topic: &str, seed: u64, count: usize) -> Vec<(String, i64)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let msgs: Vec<(String, i64)> = (0..count)
        .map(|_| {
            (
                format!("k{}", rng.random_range(0..50)),
                rng.random_range(-1000..1000),
            )
        })
        .collect();
    let producer = ReliableProducer::new(config).unwrap();
    for (k, v) in &msgs {
        producer
            .send(topic, Some(k.as_bytes()), v.to_string().as_bytes())
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    msgs
}

fn spawn(
    topic: &str,
    state: &Path,
    workers: usize,
    processes: usize,
    base_port: u16,
    extra: &[&str],
) -> Vec<Child> {
    (0..processes)
        .map(|p| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_alluvium"));
            cmd.args(["keyed-stats", "--brokers", &brokers(), "--topic", topic])
                .arg("--state")
                .arg(state)
                .args([
                    "--workers",
                    &workers.to_string(),
                    "--epoch-records",
                    "300",
                    "--epoch-ms",
                    "40",
                ])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            if processes > 1 {
                cmd.args([
                    "--processes",
                    &processes.to_string(),
                    "--process",
                    &p.to_string(),
                    "--base-port",
                    &base_port.to_string(),
                ]);
            }
            cmd.spawn().expect("spawning alluvium")
        })
        .collect()
}

fn wait_all(children: Vec<Child>, timeout: Duration) -> Vec<std::process::ExitStatus> {
    let start = Instant::now();
    children
        .into_iter()
        .map(|mut c| loop {
            if let Some(status) = c.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = c.kill();
                panic!("alluvium did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        })
        .collect()
}

/// Waits until the file table in `state` has a commit.
fn wait_for_commit(state: &Path, timeout: Duration) {
    let start = Instant::now();
    while !state.join("commits.log").exists() && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn crash_and_recover(workers: usize, processes: usize, seed: u64) {
    let config = KafkaConfig::new(brokers());
    let topic = unique("crash");
    assert!(ensure_topic(&config, &topic, 4).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("table");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut input = produce(&config, &topic, seed, 4_000);
    // Below the ephemeral range (32768+), so outgoing connections of other tests never hold
    // the port the cluster is about to bind.
    let mut base_port: u16 = rng.random_range(20_000..30_000);

    // Messages keep arriving while the pipeline is killed and restarted.
    let feeder = {
        let config = config.clone();
        let topic = topic.clone();
        std::thread::spawn(move || {
            let mut fed = Vec::new();
            for i in 0..16 {
                fed.extend(produce(&config, &topic, seed * 1000 + i, 500));
                std::thread::sleep(Duration::from_millis(150));
            }
            fed
        })
    };
    let mut kills = 0;
    for round in 0..6 {
        base_port += processes as u16;
        // Continuous mode: the process only stops when killed.
        let mut children = spawn(&topic, &state, workers, processes, base_port, &[]);
        if round == 0 {
            // However loaded the machine, let the first run commit something before the kill.
            wait_for_commit(&state, Duration::from_secs(30));
        }
        // A cluster of processes needs about a second to connect (timely retries every second).
        let window = if processes > 1 {
            1_200..2_600
        } else {
            200..900
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(window)));
        for c in &mut children {
            if c.try_wait().unwrap().is_none() {
                kills += 1;
            }
            let _ = c.kill(); // SIGKILL
        }
        for mut c in children {
            let _ = c.wait();
        }
    }
    assert!(
        kills >= 6,
        "the pipeline exited by itself instead of being killed"
    );
    input.extend(feeder.join().unwrap());
    let committed_before = FileSink::<Row>::new(&state).commit_log().unwrap().len();
    assert!(
        committed_before > 0,
        "nothing was committed before the final run"
    );

    base_port += processes as u16;
    let statuses = wait_all(
        spawn(
            &topic,
            &state,
            workers,
            processes,
            base_port,
            &["--until-idle"],
        ),
        Duration::from_secs(120),
    );
    assert!(
        statuses.iter().all(|s| s.success()),
        "final run failed: {statuses:?}"
    );

    let sink = FileSink::<Row>::new(&state);
    let table = sink.read_state().unwrap().expect("a commit happened");
    // Offsets start at 0 without gaps (no transactions), so the positions add up to the input.
    let covered: i64 = (0..4)
        .map(|p| {
            table
                .positions
                .get(&PartitionId::new(topic.clone(), p))
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        covered,
        input.len() as i64,
        "the final run stopped early or read records twice: positions {:?}, commits {:?}",
        table.positions,
        sink.commit_log().unwrap()
    );
    let got: Vec<Row> = table
        .rows
        .iter()
        .map(|(r, c)| {
            assert_eq!(*c, 1, "row {r:?} has multiplicity {c}");
            r.clone()
        })
        .collect();
    assert_eq!(
        got,
        keyed_stats_reference(input.iter().cloned()),
        "committed table differs from the input"
    );
    assert_eq!(end_offsets(&config, &topic).unwrap().len(), 4);
    let commits = sink.commit_log().unwrap();
    assert!(
        commits.windows(2).all(|w| w[0] < w[1]),
        "an epoch was committed twice: {commits:?}"
    );
    assert!(
        commits.len() >= 3,
        "expected several epochs, got {commits:?}"
    );
}

#[test]
fn sigkill_and_restart_one_worker() {
    crash_and_recover(1, 1, 11);
}

#[test]
fn sigkill_and_restart_two_workers() {
    crash_and_recover(2, 1, 22);
}

#[test]
fn sigkill_and_restart_two_processes() {
    crash_and_recover(1, 2, 33);
}

/// The same input gives the same table with 1 worker, 2 workers and 2 processes.
#[test]
fn worker_layouts_agree() {
    let config = KafkaConfig::new(brokers());
    let topic = unique("layouts");
    ensure_topic(&config, &topic, 4).unwrap();
    let input = produce(&config, &topic, 5, 5_000);
    let expected = keyed_stats_reference(input);
    for (i, (workers, processes)) in [(1, 1), (2, 1), (1, 2)].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let port = 30_000 + (std::process::id() % 600) as u16 * 4 + i as u16 * 2;
        let statuses = wait_all(
            spawn(
                &topic,
                dir.path(),
                workers,
                processes,
                port,
                &["--until-idle"],
            ),
            Duration::from_secs(120),
        );
        assert!(
            statuses.iter().all(|s| s.success()),
            "{workers}x{processes}: {statuses:?}"
        );
        let table = FileSink::<Row>::new(dir.path())
            .read_state()
            .unwrap()
            .unwrap();
        let got: Vec<Row> = table.rows.into_iter().map(|(r, _)| r).collect();
        assert_eq!(got, expected, "{workers} workers x {processes} processes");
    }
}

fn run_expecting_error(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_alluvium"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success(), "expected a failure for {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn missing_topic_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("absent");
    let err = run_expecting_error(&[
        "keyed-stats",
        "--brokers",
        &brokers(),
        "--topic",
        &topic,
        "--state",
        dir.path().to_str().unwrap(),
        "--until-idle",
        "--kafka-retries",
        "0",
    ]);
    assert!(
        err.contains(&topic) && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn unreachable_broker_is_reported_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = run_expecting_error(&[
        "keyed-stats",
        "--brokers",
        "127.0.0.1:1",
        "--topic",
        "t",
        "--state",
        dir.path().to_str().unwrap(),
        "--until-idle",
        "--kafka-retries",
        "1",
    ]);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("unreachable after 2 attempts"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_expecting_error(&[
        "keyed-stats",
        "--brokers",
        "nohost",
        "--topic",
        "t",
        "--state",
        dir.path().to_str().unwrap(),
    ]);
    assert!(err.contains("kafka.brokers"), "{err}");
    let err = run_expecting_error(&[
        "keyed-stats",
        "--brokers",
        &brokers(),
        "--topic",
        "t",
        "--state",
        dir.path().to_str().unwrap(),
        "--processes",
        "2",
        "--process",
        "5",
    ]);
    assert!(err.contains("cluster.process"), "{err}");
}

/// A process of a cluster that fails (its writer cannot stage an epoch) stops the whole
/// cluster: its peers must not take the epochs it released for complete and commit them
/// without its data. Both processes exit with an error, and a restart completes the table
/// exactly.
#[test]
fn a_failed_process_stops_its_peers_and_nothing_partial_is_committed() {
    let config = KafkaConfig::new(brokers());
    let topic = unique("procfail");
    assert!(ensure_topic(&config, &topic, 4).unwrap());
    let input = produce(&config, &topic, 7, 3_000);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("table");
    let base_port = common::stable_free_port();
    let children: Vec<Child> = (0..2)
        .map(|p| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_alluvium"));
            cmd.args(["keyed-stats", "--brokers", &brokers(), "--topic", &topic])
                .arg("--state")
                .arg(&state)
                .args([
                    "--workers",
                    "1",
                    "--epoch-records",
                    "200",
                    "--epoch-ms",
                    "20",
                ])
                .args([
                    "--until-idle",
                    "--processes",
                    "2",
                    "--process",
                    &p.to_string(),
                ])
                .args(["--base-port", &base_port.to_string()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if p == 1 {
                // Process 1's writer fails its third epoch.
                cmd.env("ALLUVIUM_FAILPOINT", "fail_stage:file:3");
            }
            cmd.spawn().expect("spawning alluvium")
        })
        .collect();
    let statuses = wait_all(children, Duration::from_secs(120));
    assert!(
        statuses.iter().all(|s| !s.success()),
        "every process must fail: {statuses:?}"
    );

    let statuses = wait_all(
        spawn(&topic, &state, 1, 2, base_port + 2, &["--until-idle"]),
        Duration::from_secs(120),
    );
    assert!(
        statuses.iter().all(|s| s.success()),
        "restart: {statuses:?}"
    );
    let table = FileSink::<Row>::new(&state)
        .read_state()
        .unwrap()
        .expect("a commit happened");
    let got: Vec<Row> = table
        .rows
        .iter()
        .map(|(r, c)| {
            assert_eq!(*c, 1, "row {r:?} has multiplicity {c}");
            r.clone()
        })
        .collect();
    assert_eq!(got, keyed_stats_reference(input.into_iter()));
}
