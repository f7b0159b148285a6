//! `alluvium ingest api` against the real broker: every status code of the contract, a
//! 10,000-event burst over concurrent connections, the broker killed and restarted
//! mid-burst, and a graceful shutdown — every acknowledged event is in the topic.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{brokers, read_topic, service_env, unique};

const TOKEN: &str = "test-token-0123456789abcdef";

/// A running `alluvium ingest api`; killed on drop.
struct Api {
    child: Child,
    url: String,
}

impl Api {
    fn start(brokers: &str, prefix: &str, extra: &[&str]) -> Api {
        let mut child = Command::new(env!("CARGO_BIN_EXE_alluvium"))
            .args([
                "ingest",
                "api",
                "--listen",
                "127.0.0.1:0",
                "--topic-prefix",
                prefix,
            ])
            .args(["--brokers", brokers])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning alluvium ingest api");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the listen line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Api { child, url }
    }

    fn orders(&self) -> String {
        format!("{}/v1/orders", self.url)
    }

    /// Waits until `/readyz` says ready.
    async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the API never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private broker (tansu) whose log lives in the S3 test server, so it can be killed and
/// restarted without losing what it acknowledged.
struct PrivateBroker {
    child: Option<Child>,
    port: u16,
    bucket: String,
}

impl PrivateBroker {
    fn start() -> PrivateBroker {
        // Restarted on the same port after a kill: keep it out of the ephemeral range.
        let port = common::stable_free_port();
        let bucket = unique("broker").replace('_', "-");
        let endpoint = service_env("ALLUVIUM_S3_ENDPOINT");
        let status = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
            .status()
            .expect("curl");
        assert!(status.success(), "creating bucket {bucket}");
        let mut b = PrivateBroker {
            child: None,
            port,
            bucket,
        };
        b.restart();
        b
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(service_env("ALLUVIUM_TANSU_BIN"))
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", &format!("s3://{}/", self.bucket)])
            .env("AWS_ENDPOINT", service_env("ALLUVIUM_S3_ENDPOINT"))
            .env("AWS_ALLOW_HTTP", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn event(id: &str, order: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","order_id":"{order}","customer_id":1,"status":"paid","event_ts":"2026-03-01T10:15:00Z","order_ts":"2026-03-01T10:02:11Z","currency":"EUR","items":[{{"product_id":"P-1","quantity":1,"unit_price":"1.50"}}],"shipping":{{"country":"DE"}}}}"#
    )
}

fn event_id_of(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("payload is JSON");
    v["event_id"].as_str().expect("event_id").to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn status_codes_of_the_contract() {
    let prefix = unique("api") + "_";
    let api = Api::start(
        &brokers(),
        &prefix,
        &["--token", TOKEN, "--max-body-bytes", "4096"],
    );
    let client = reqwest::Client::new();
    runtime().block_on(async {
        let health = client
            .get(format!("{}/healthz", api.url))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        api.wait_ready(&client).await;
        let post = |body: Vec<u8>, ctype: &str, token: Option<&str>| {
            let mut r = client
                .post(api.orders())
                .header("content-type", ctype)
                .body(body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let json = "application/json";

        // 401: no token, wrong token, wrong scheme.
        let r = post(event("x", "O").into(), json, None).await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = post(
            event("x", "O").into(),
            json,
            Some("test-token-0123456789abcdeX"),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 401);
        let r = client
            .post(api.orders())
            .header("content-type", json)
            .header("authorization", format!("Basic {TOKEN}"))
            .body(event("x", "O"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // 415: not a JSON content type (or none at all).
        let r = post(event("x", "O").into(), "text/plain", Some(TOKEN))
            .await
            .unwrap();
        assert_eq!(r.status(), 415);
        let r = client
            .post(api.orders())
            .bearer_auth(TOKEN)
            .body(event("x", "O"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415);

        // 413: over the 4 KiB limit.
        let big = format!("[{}]", vec![event("big", "O-big"); 40].join(","));
        assert!(big.len() > 4096);
        let r = post(big.into(), json, Some(TOKEN)).await.unwrap();
        assert_eq!(r.status(), 413);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "payload_too_large");

        // 400: not JSON, truncated JSON, an NDJSON body with one bad line; nothing produced.
        for (body, ctype) in [
            ("hello", json),
            ("{\"order_id\": \"O-1\",", json),
            ("{\"a\":1}\nnot json\n", "application/x-ndjson"),
        ] {
            let r = post(body.into(), ctype, Some(TOKEN)).await.unwrap();
            assert_eq!(r.status(), 400, "{body}");
            let err: serde_json::Value = r.json().await.unwrap();
            assert_eq!(err["error"], "not_json");
        }

        // 202: an object, an array, NDJSON; numeric order ids give no key; odd spacing and
        // number formats are stored byte for byte.
        let one = "{ \"event_id\": \"e1\", \"order_id\": \"O-1\", \"unit_price\": 19.990 }";
        let r = post(one.into(), "application/json; charset=utf-8", Some(TOKEN))
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            serde_json::json!({"accepted": 1})
        );
        let array = format!(
            "[{}, {},\n{}]",
            event("e2", "O-2"),
            event("e3", "O-2"),
            r#"{"event_id":"e4","order_id":44}"#
        );
        let r = post(array.into(), json, Some(TOKEN)).await.unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["accepted"], 3);
        let ndjson = format!("{}\n\n{}\n", event("e5", "O-5"), event("e6", "O-6"));
        let r = post(ndjson.into(), "application/x-ndjson", Some(TOKEN))
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["accepted"], 2);

        // The service's documents.
        let served = client
            .get(format!("{}/openapi.json", api.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let kept = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json"),
        )
        .unwrap();
        assert_eq!(served, kept);
        let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
        for code in ["202", "400", "401", "413", "415", "503"] {
            assert!(
                doc["paths"]["/v1/orders"]["post"]["responses"][code].is_object(),
                "openapi.json documents {code}"
            );
        }
        let metrics = client
            .get(format!("{}/metrics", api.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "alluvium_api_requests_total{route=\"/v1/orders\",status=\"202\"} 3",
            "alluvium_api_requests_total{route=\"/v1/orders\",status=\"401\"} 3",
            "alluvium_api_requests_total{route=\"/v1/orders\",status=\"400\"} 3",
            "alluvium_api_events_total{outcome=\"accepted\"} 6",
            "alluvium_api_broker_ready 1",
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
    });

    let topic = format!("{prefix}orders");
    let messages = read_topic(&brokers(), &topic, 6);
    let mut by_id: BTreeMap<String, (Option<String>, String, Option<String>)> = BTreeMap::new();
    for m in &messages {
        let id = event_id_of(&m.payload);
        let key = m
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        let before = by_id.insert(
            id.clone(),
            (
                key,
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.origin.clone(),
            ),
        );
        assert!(before.is_none(), "{id} produced twice");
    }
    assert_eq!(
        by_id.keys().cloned().collect::<Vec<_>>(),
        ["e1", "e2", "e3", "e4", "e5", "e6"]
    );
    assert_eq!(
        by_id["e1"],
        (
            Some("O-1".into()),
            "{ \"event_id\": \"e1\", \"order_id\": \"O-1\", \"unit_price\": 19.990 }".into(),
            Some("rest:orders".into())
        )
    );
    assert_eq!(by_id["e2"].1, event("e2", "O-2"));
    assert_eq!(by_id["e4"].0, None, "a numeric order_id is no key");
    // Both events of order O-2 share a partition (the key decides it).
    let partitions: HashSet<i32> = messages
        .iter()
        .filter(|m| m.key.as_deref() == Some(b"O-2"))
        .map(|m| m.partition)
        .collect();
    assert_eq!(partitions.len(), 1);
}

#[test]
fn burst_of_10k_events_over_concurrent_connections_each_stored_once() {
    let prefix = unique("burst") + "_";
    let api = Api::start(&brokers(), &prefix, &["--no-auth"]);
    let rt = runtime();
    let started = Instant::now();
    rt.block_on(async {
        let client = reqwest::Client::new();
        api.wait_ready(&client).await;
        // 32 connections: half send one event per request, half arrays of 25.
        let tasks: Vec<_> = (0..32)
            .map(|c| {
                let client = client.clone();
                let url = api.orders();
                tokio::spawn(async move {
                    let mut sent = 0;
                    let mut n = 0;
                    while sent < 10_000 / 32 + usize::from(c < 10_000 % 32) {
                        let per = if c % 2 == 0 { 1 } else { 25 };
                        let take = per.min(10_000 / 32 + usize::from(c < 10_000 % 32) - sent);
                        let body: Vec<String> = (0..take)
                            .map(|i| {
                                event(
                                    &format!("b{c}-{}", sent + i),
                                    &format!("O-{c}-{}", (sent + i) % 50),
                                )
                            })
                            .collect();
                        let body = if per == 1 {
                            body.join("")
                        } else {
                            format!("[{}]", body.join(","))
                        };
                        let r = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .expect("request");
                        assert_eq!(r.status(), 202);
                        let accepted = r.json::<serde_json::Value>().await.unwrap()["accepted"]
                            .as_u64()
                            .unwrap();
                        assert_eq!(accepted as usize, take);
                        sent += take;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut requests = 0;
        for t in tasks {
            requests += t.await.expect("client task");
        }
        eprintln!(
            "10,000 events in {requests} requests acknowledged in {:.2?}",
            started.elapsed()
        );
    });
    let messages = read_topic(&brokers(), &format!("{prefix}orders"), 10_000);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        *seen.entry(event_id_of(&m.payload)).or_default() += 1;
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(m.key.as_deref(), v["order_id"].as_str().map(str::as_bytes));
    }
    assert_eq!(seen.len(), 10_000, "every event stored");
    assert!(seen.values().all(|&n| n == 1), "no event stored twice");
}

#[test]
fn broker_killed_mid_burst_gives_503s_and_loses_nothing_acknowledged() {
    let mut broker = PrivateBroker::start();
    let prefix = unique("outage") + "_";
    let api = Api::start(
        &broker.brokers(),
        &prefix,
        &[
            "--no-auth",
            "--delivery-timeout-ms",
            "2000",
            "--partitions",
            "2",
        ],
    );
    let rt = runtime();
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let unavailable = Arc::new(Mutex::new(0usize));
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 150;
    rt.block_on(async {
        let client = reqwest::Client::new();
        api.wait_ready(&client).await;
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let client = client.clone();
                let url = api.orders();
                let acknowledged = acknowledged.clone();
                let unavailable = unavailable.clone();
                tokio::spawn(async move {
                    for i in 0..PER_CLIENT {
                        let id = format!("k{c}-{i}");
                        // A well-behaved client: retries 503s after Retry-After.
                        let deadline = Instant::now() + Duration::from_secs(120);
                        loop {
                            let r = client
                                .post(&url)
                                .header("content-type", "application/json")
                                .body(event(&id, &format!("O-{c}")))
                                .send()
                                .await
                                .expect("the API stays up");
                            match r.status().as_u16() {
                                202 => {
                                    acknowledged.lock().unwrap().insert(id.clone());
                                    break;
                                }
                                503 => {
                                    let wait: u64 = r.headers()["retry-after"]
                                        .to_str()
                                        .unwrap()
                                        .parse()
                                        .unwrap();
                                    *unavailable.lock().unwrap() += 1;
                                    assert!(Instant::now() < deadline, "{id} never accepted");
                                    tokio::time::sleep(Duration::from_secs(wait)).await;
                                }
                                s => panic!("unexpected status {s}"),
                            }
                        }
                    }
                })
            })
            .collect();
        // Kill the broker once a third is stored, bring it back 3 s later.
        while acknowledged.lock().unwrap().len() < CLIENTS * PER_CLIENT / 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        broker.kill();
        let during = acknowledged.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(3)).await;
        // While it is down, nothing is acknowledged (at most what was in flight at the kill).
        let after_outage = acknowledged.lock().unwrap().len();
        assert!(
            after_outage <= during + CLIENTS,
            "acknowledged while the broker was down"
        );
        let ready = client
            .get(format!("{}/readyz", api.url))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503, "not ready while the broker is down");
        broker.restart();
        for t in tasks {
            t.await.expect("client task");
        }
    });
    assert!(*unavailable.lock().unwrap() > 0, "clients saw 503s");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), CLIENTS * PER_CLIENT);
    let stored: HashSet<String> = read_topic(
        &broker.brokers(),
        &format!("{prefix}orders"),
        acknowledged.len(),
    )
    .iter()
    .map(|m| event_id_of(&m.payload))
    .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`) to a process.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
fn sigterm_drains_in_flight_requests() {
    // The broker is frozen (SIGSTOP) so that every request is surely still waiting for its
    // acknowledgements when the API is told to stop.
    let broker = PrivateBroker::start();
    let broker_pid = broker.child.as_ref().map(Child::id).unwrap();
    let prefix = unique("drain") + "_";
    let mut api = Api::start(&broker.brokers(), &prefix, &["--no-auth"]);
    let rt = runtime();
    let statuses = rt.block_on(async {
        let client = reqwest::Client::new();
        api.wait_ready(&client).await;
        signal(broker_pid, "-STOP");
        let tasks: Vec<_> = (0..20)
            .map(|c| {
                let client = client.clone();
                let url = api.orders();
                tokio::spawn(async move {
                    let body = format!(
                        "[{}]",
                        (0..50)
                            .map(|i| event(&format!("d{c}-{i}"), "O-d"))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("an in-flight request is answered");
                    r.status().as_u16()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        signal(api.child.id(), "-TERM");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            api.child.try_wait().unwrap().is_none(),
            "the API waits for its in-flight requests"
        );
        signal(broker_pid, "-CONT");
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.expect("client task"));
        }
        statuses
    });
    assert_eq!(statuses, vec![202; 20], "every in-flight request completed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = api.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
    let stored: HashSet<String> = read_topic(&broker.brokers(), &format!("{prefix}orders"), 1000)
        .iter()
        .map(|m| event_id_of(&m.payload))
        .collect();
    assert_eq!(stored.len(), 1000, "all 20 x 50 events stored");
}

#[test]
fn full_producer_queue_answers_503_with_retry_after() {
    let prefix = unique("full") + "_";
    let api = Api::start(
        &brokers(),
        &prefix,
        &["--no-auth", "--max-queued-messages", "5"],
    );
    runtime().block_on(async {
        let client = reqwest::Client::new();
        api.wait_ready(&client).await;
        let body = format!(
            "[{}]",
            (0..200)
                .map(|i| event(&format!("f{i}"), "O-f"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let r = client
            .post(api.orders())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let err: serde_json::Value = r.json().await.unwrap();
        assert!(
            err["message"].as_str().unwrap().contains("queue is full"),
            "{err}"
        );
        // Once the queue drains, a request that fits is accepted again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client
                .post(api.orders())
                .header("content-type", "application/json")
                .body(event("small", "O-f"))
                .send()
                .await
                .unwrap();
            if r.status() == 202 {
                break;
            }
            assert_eq!(r.status(), 503);
            assert!(Instant::now() < deadline, "the queue never drained");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
