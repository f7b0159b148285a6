//! Helpers shared by the integration tests that run `alluvium` against the test services.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A variable exported by `scripts/services.sh`; the tests need the real services.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test services with `scripts/services.sh up` (or run scripts/test.sh)")
    })
}

/// The Kafka-protocol broker of the test services.
pub fn brokers() -> String {
    service_env("ALLUVIUM_KAFKA_BROKERS")
}

/// The public sample case folder, copied into the repository.
pub fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sample-small")
}

/// A name no other test (or earlier run) uses; valid for topics and database names.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// The `alluvium` binary with `args`, pointed at the test broker, logging errors only.
pub fn alluvium<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(env!("CARGO_BIN_EXE_alluvium"));
    c.args(args)
        .env("ALLUVIUM_KAFKA_BROKERS", brokers())
        .env("RUST_LOG", "error");
    c
}

/// Runs `alluvium` and asserts success.
pub fn ok<I, S>(args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = alluvium(args).output().expect("running alluvium");
    assert!(
        out.status.success(),
        "alluvium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `alluvium fixture load` of the sample into topics named `<prefix>orders`, ...
pub fn load_sample(prefix: &str) {
    ok([
        OsStr::new("fixture"),
        OsStr::new("load"),
        case().as_os_str(),
        OsStr::new("--topic-prefix"),
        OsStr::new(prefix),
    ]);
}

/// The records of a CSV text, sorted (compare as multisets), optionally without the last column.
pub fn sorted_csv(text: &str, header: bool, drop_last: bool) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(header)
        .from_reader(text.as_bytes());
    let mut rows: Vec<Vec<String>> = r
        .records()
        .map(|rec| {
            let mut v: Vec<String> = rec
                .expect("a CSV record")
                .iter()
                .map(str::to_owned)
                .collect();
            if drop_last {
                v.pop();
            }
            v
        })
        .collect();
    rows.sort();
    rows
}

/// The rows of a CSV file with a header, sorted.
pub fn csv_rows(path: &Path, drop_last: bool) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sorted_csv(&text, true, drop_last)
}

/// Every silver/gold table and the quarantine counts exported in `export` equal `expected/`.
pub fn assert_matches_expected(export: &Path) {
    assert_matches_expected_as(export, false)
}

/// As [`assert_matches_expected`]; with `live_commit_times` (customers captured from a real
/// PostgreSQL), the `valid_to` of versions closed by a delete is the delete's wall-clock
/// commit time, so only its presence is checked (`valid_to_check = delete_commit_time`).
pub fn assert_matches_expected_as(export: &Path, live_commit_times: bool) {
    if let Some(diff) = expected_mismatch(export, live_commit_times) {
        panic!("{diff}");
    }
}

/// The first table of `export` that differs from `expected/` (see
/// [`assert_matches_expected_as`]), described; `None` when all are equal.
pub fn expected_mismatch(export: &Path, live_commit_times: bool) -> Option<String> {
    let tables = [
        "silver_orders.csv",
        "silver_order_items.csv",
        "silver_products.csv",
        "silver_customers.csv",
        "dim_customers.csv",
        "dim_products.csv",
        "fact_order_items.csv",
        "daily_sales.csv",
        "customer_ltv.csv",
        "quarantine_counts.csv",
    ];
    for t in tables {
        let mut expected = csv_rows(&case().join("expected").join(t), t == "dim_customers.csv");
        let path = export.join(t);
        if !path.exists() {
            return Some(format!("{t}: not exported"));
        }
        let mut got = csv_rows(&path, false);
        if live_commit_times && t == "dim_customers.csv" {
            // (customer_id, valid_from) of the versions a delete closed.
            let all = csv_rows(&case().join("expected").join(t), false);
            let closed: std::collections::HashSet<(String, String)> = all
                .iter()
                .filter(|r| r[9] == "delete_commit_time")
                .map(|r| (r[0].clone(), r[6].clone()))
                .collect();
            assert!(!closed.is_empty());
            for rows in [&mut expected, &mut got] {
                for r in rows.iter_mut() {
                    if closed.contains(&(r[0].clone(), r[6].clone())) && r[7] != "\\N" {
                        r[7] = "<commit time>".into();
                    }
                }
                rows.sort();
            }
        }
        if got.len() != expected.len() {
            return Some(format!(
                "{t}: {} rows, expected {}",
                got.len(),
                expected.len()
            ));
        }
        if let Some((g, e)) = got.iter().zip(&expected).find(|(g, e)| g != e) {
            return Some(format!("{t}: first difference: got {g:?}, expected {e:?}"));
        }
    }
    None
}

pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an SQL file with psql against `url`, stopping at the first error.
pub fn psql_file(url: &str, file: &Path) {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-f"])
        .arg(file)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql -f {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database on the test server; returns its URL.
pub fn fresh_database(name: &str) -> String {
    let admin = service_env("ALLUVIUM_PG_URL");
    psql(&admin, &format!("CREATE DATABASE {name}"));
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("ALLUVIUM_PG_URL has no database: {admin}"),
    }
}

/// Every gold table of the warehouse equals `expected/<table>.csv`.
pub fn assert_warehouse_matches(url: &str) {
    for table in alluvium_medallion::warehouse::gold_tables() {
        let short = table.name.trim_start_matches("gold.");
        let expected_text =
            std::fs::read_to_string(case().join("expected").join(format!("{short}.csv"))).unwrap();
        let header: Vec<String> = expected_text
            .lines()
            .next()
            .unwrap()
            .split(',')
            .map(str::to_owned)
            .collect();
        let drop_last = short == "dim_customers";
        let columns = if drop_last {
            &header[..header.len() - 1]
        } else {
            &header[..]
        };
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                let ty = table
                    .columns
                    .iter()
                    .find(|(n, _)| n == c)
                    .map(|(_, t)| *t)
                    .unwrap_or_else(|| panic!("{c} not in {}", table.name));
                match ty {
                    alluvium_connectors::warehouse::PgType::Timestamptz => format!(
                        "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                    ),
                    alluvium_connectors::warehouse::PgType::Date => {
                        format!("to_char({c}, 'YYYY-MM-DD')")
                    }
                    _ => format!("{c}::text"),
                }
            })
            .collect();
        let out = Command::new("psql")
            .arg(url)
            .args(["-v", "ON_ERROR_STOP=1", "-qc"])
            .arg(format!(
                "COPY (SELECT {} FROM {}) TO STDOUT WITH (FORMAT csv, NULL '\\N')",
                select.join(", "),
                table.name
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = sorted_csv(&String::from_utf8_lossy(&out.stdout), false, false);
        let expected = sorted_csv(&expected_text, true, drop_last);
        assert_eq!(got.len(), expected.len(), "{}: row count", table.name);
        assert_eq!(got, expected, "{}", table.name);
    }
}

/// One message read back from a topic.
#[derive(Clone, Debug)]
pub struct ReadMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The `alluvium-source` header.
    pub origin: Option<String>,
    /// Every header (values as lossy UTF-8).
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Every message of `topic` on `brokers`: reads from the beginning of every partition until
/// at least `at_least` messages arrived and nothing more came for 1.5 s (the broker's
/// reported end offsets may lag, so quiet is the end).
pub fn read_topic(brokers: &str, topic: &str, at_least: usize) -> Vec<ReadMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use std::time::{Duration, Instant};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    // The topic may not exist yet (the process under test creates it).
    let mut tpl = rdkafka::TopicPartitionList::new();
    let waiting = Instant::now();
    while tpl.count() == 0 {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        for t in md.topics().iter().filter(|t| t.error().is_none()) {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                    .unwrap();
            }
        }
        if tpl.count() == 0 {
            assert!(
                waiting.elapsed() < Duration::from_secs(60),
                "topic {topic} never appeared"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let origin = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "alluvium-source")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadMessage {
                    headers,
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    origin,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if out.len() >= at_least && last.elapsed() > Duration::from_millis(1500) => break,
            None => {}
        }
    }
    out
}

/// Whether `topic` exists on the test broker with at least one partition.
pub fn topic_exists(topic: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = match rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(5))
        .map(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
        .unwrap_or(false)
}

/// A free port below the ephemeral range (32768+): a port the OS hands out for `:0` or for
/// outgoing connections can be taken again by another test between our check and our use.
pub fn stable_free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// A background `alluvium` process, killed when dropped. `url` is what its first stdout line
/// announced (`listening on …`, `metrics on …`); stdout stays open until the drop, since the
/// process may print again when it stops.
pub struct Serving {
    pub child: std::process::Child,
    pub url: String,
    _stdout: Option<std::io::BufReader<std::process::ChildStdout>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `alluvium args` and waits for its first stdout line, which must start with
/// `announce` (the rest is the URL).
pub fn serve<S: AsRef<OsStr>>(args: &[S], announce: &str) -> Serving {
    use std::io::BufRead;
    let mut child = alluvium(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawning alluvium");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("reading the first line");
    let url = line
        .trim()
        .strip_prefix(announce)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Serving {
        child,
        url,
        _stdout: Some(stdout),
    }
}

/// `alluvium run --until-idle` over the topics of `prefix` into the lake given by `lake`
/// (flags), with the run's own flags `extra`.
pub fn run_into_lake(prefix: &str, state: &Path, lake: &[&str], extra: &[&str]) {
    let mut args = vec![
        "run",
        "--topic-prefix",
        prefix,
        "--state",
        state.to_str().unwrap(),
        "--until-idle",
    ];
    args.extend(extra);
    args.extend(lake);
    ok(args);
}

/// An Iceberg REST catalog server (rustberg, installed by the test services) of this test's
/// own, its catalog in memory and its tables under `warehouse` (`file:///…`, or
/// `s3://bucket/prefix` on the test S3 server); killed when dropped. `url` is its base URL,
/// for `--lake-catalog-uri`; its log is `log`.
pub fn rest_catalog(warehouse: &str, log: &Path) -> Serving {
    rest_catalog_with_keys(warehouse, log, &[])
}

/// [`rest_catalog`] with authentication: it accepts only the API keys `keys`, each a
/// `(role, secret)` (rustberg's built-in roles: `admin`, `writer`, `reader`), sent as
/// `Authorization: Bearer <secret>`. Without keys it accepts every request.
pub fn rest_catalog_with_keys(warehouse: &str, log: &Path, keys: &[(&str, &str)]) -> Serving {
    rest_catalog_on(stable_free_port(), None, warehouse, log, keys)
}

/// [`rest_catalog_with_keys`] on a given port (of [`stable_free_port`]), its catalog kept in
/// the directory `catalog` (so that a restarted server finds its tables) or in memory.
pub fn rest_catalog_on(
    port: u16,
    catalog: Option<&Path>,
    warehouse: &str,
    log: &Path,
    keys: &[(&str, &str)],
) -> Serving {
    let catalog = catalog.map_or("memory://".to_string(), |d| {
        format!("file://{}", d.display())
    });
    let config = log.with_extension("toml");
    // Requests are not rate-limited: a pipeline of small epochs commits a dozen tables many
    // times a second (rustberg's default would answer 429 after a burst of 200).
    let mut toml = format!(
        "[rate_limit]\nenabled = false\n[storage]\ncatalog_url = \"{catalog}\"\n\
         warehouse_location = \"{warehouse}\"\n"
    );
    if warehouse.starts_with("s3://") {
        // The server writes the metadata files: it needs the S3 server too.
        toml.push_str(&format!(
            "[storage.properties]\n\"s3.endpoint\" = \"{}\"\n\"s3.region\" = \"us-east-1\"\n\
             \"s3.path-style-access\" = \"true\"\n\"s3.access-key-id\" = \"test\"\n\
             \"s3.secret-access-key\" = \"test\"\n",
            service_env("ALLUVIUM_S3_ENDPOINT")
        ));
    }
    let mut command = Command::new(service_env("ALLUVIUM_RUSTBERG_BIN"));
    for (i, (role, secret)) in keys.iter().enumerate() {
        // The server reads each key's secret from the environment variable its entry names.
        let var = format!("ALLUVIUM_TEST_CATALOG_KEY_{i}");
        toml.push_str(&format!(
            "[[server.auth.api_keys]]\nname = \"{role}-{i}\"\ntenant = \"default\"\n\
             roles = [\"{role}\"]\nkey_env = \"{var}\"\n"
        ));
        command.env(var, secret);
    }
    std::fs::write(&config, toml).expect("writing the REST catalog's configuration");
    let log = std::fs::File::create(log).expect("creating the REST catalog's log");
    command
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--log-level", "warn"])
        // `--dev` allows `--no-auth` and plain HTTP on loopback.
        .args(["--dev", "--insecure-http"]);
    if keys.is_empty() {
        command.arg("--no-auth");
    }
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawning rustberg");
    let url = format!("http://127.0.0.1:{port}");
    let serving = Serving {
        child,
        url: url.clone(),
        _stdout: None,
    };
    for _ in 0..300 {
        // Up: it answers, whether or not it asks for a credential.
        if matches!(http_get_status(port, "/v1/config"), Some(200 | 401)) {
            return serving;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the REST catalog did not answer on {url}/v1/config within 30 s");
}

/// The status of `GET path` on a loopback port (`None`: no answer).
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts `alluvium args` in the background with stdout discarded.
pub fn spawn_quiet<S: AsRef<OsStr>>(args: &[S]) -> Serving {
    let child = alluvium(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning alluvium");
    Serving {
        child,
        url: String::new(),
        _stdout: None,
    }
}

/// `alluvium ingest api` without auth on a free port, producing to `<prefix>orders`.
pub fn serve_ingest_api(prefix: &str) -> Serving {
    serve(
        &[
            "ingest",
            "api",
            "--no-auth",
            "--listen",
            "127.0.0.1:0",
            "--topic-prefix",
            prefix,
        ],
        "listening on ",
    )
}

/// Two instances of one sink, as a restarted pipeline meets a stale one: `old` commits
/// `old_rows[0]` as epoch 1; `new` claims the sink; `old`'s epoch 2 (`old_rows[1]`) must
/// fail, and its error is returned; `new` plans from epoch 1 and commits `new_rows` as
/// epoch 2.
pub fn later_claim_fences_the_earlier<D, S: alluvium_engine::Sink<D>>(
    old: &S,
    new: &S,
    old_rows: [&[(D, isize)]; 2],
    new_rows: &[(D, isize)],
) -> String {
    use alluvium_engine::{Positions, SinkCommitter, SinkWriter};
    let stage = |writer: &mut S::Writer, epoch, rows| -> Vec<S::Staged> {
        writer.stage(epoch, rows).unwrap().into_iter().collect()
    };
    old.checkpoint().unwrap();
    let mut old_writer = old.writer(0).unwrap();
    let mut old_committer = old.committer().unwrap(); // claims the sink
    let staged = stage(&mut old_writer, 1, old_rows[0]);
    old_committer.commit(1, &staged, &Positions::new()).unwrap();

    new.claim().unwrap();
    let staged = stage(&mut old_writer, 2, old_rows[1]);
    let error = old_committer
        .commit(2, &staged, &Positions::new())
        .unwrap_err()
        .to_string();
    assert_eq!(new.checkpoint().unwrap().map(|c| c.epoch), Some(1));
    let mut new_writer = new.writer(0).unwrap();
    let mut new_committer = new.committer().unwrap();
    let staged = stage(&mut new_writer, 2, new_rows);
    new_committer.commit(2, &staged, &Positions::new()).unwrap();
    error
}

/// A proxy that loses answers (see [`lossy_tcp_proxy`]): `url` is its address, `lost`
/// counts the cut connections.
pub struct LossyProxy {
    pub url: String,
    pub lost: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A TCP proxy in front of `upstream` (`host:port`, or `http://host:port`) that loses
/// answers: every `every`-th time the client sends `pattern` (PostgreSQL's simple query
/// `COMMIT`, an HTTP request line's path), it is forwarded to the server, nothing more goes
/// back to the client, and its connection is closed a moment later — the server acted, the
/// client never hears of it. `url` is `host:port` (`http://host:port` for an HTTP upstream).
pub fn lossy_tcp_proxy(upstream: &str, pattern: &'static [u8], every: usize) -> LossyProxy {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let scheme = if upstream.starts_with("http://") {
        "http://"
    } else {
        ""
    };
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
    let url = format!("{scheme}{}", listener.local_addr().unwrap());
    let lost = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = lost.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let cut = Arc::new(AtomicBool::new(false));
            // Server to client, until the cut.
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            let cut_back = cut.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = from_server.read(&mut buf) {
                    if cut_back.load(Ordering::SeqCst) || to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown(std::net::Shutdown::Both);
            });
            // Client to server, watching for the pattern (also across two reads).
            let (mut from_client, mut to_server) = (client, server);
            let (lost, seen) = (counter.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                let mut tail: Vec<u8> = Vec::new();
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    tail.extend_from_slice(&buf[..n]);
                    let hit = tail.windows(pattern.len()).any(|w| w == pattern)
                        && (seen.fetch_add(1, Ordering::SeqCst) + 1) % every == 0;
                    if hit {
                        cut.store(true, Ordering::SeqCst);
                    }
                    if to_server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if hit {
                        lost.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        let _ = from_client.shutdown(std::net::Shutdown::Both);
                        let _ = to_server.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                    let keep = tail.len().saturating_sub(pattern.len() - 1);
                    tail.drain(..keep);
                }
            });
        }
    });
    LossyProxy { url, lost }
}
