//! REST ingest benchmark: `alluvium ingest api` (release build) in front of the test broker.
//!
//! `ALLUVIUM_BENCH_CONNECTIONS` clients (default 16) each POST NDJSON batches of
//! `ALLUVIUM_BENCH_BATCH` generated order events (default 100; 1 = one event per request) for
//! `ALLUVIUM_BENCH_SECONDS` (default 10), each waiting for its `202`. Reported: acknowledged
//! events/s and requests/s, request latency p50/p99/max (hdrhistogram), the service's peak RSS.
//!
//! Needs the test services: `scripts/services.sh up && source $ALLUVIUM_SERVICES_DIR/env`,
//! then `cargo bench -p alluvium-cli --bench ingest_api`. Without them it says so and exits.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alluvium_medallion::generate::{generate, GeneratorConfig};
use alluvium_medallion::Topics;
use hdrhistogram::Histogram;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let Ok(brokers) = std::env::var("ALLUVIUM_KAFKA_BROKERS") else {
        eprintln!("ALLUVIUM_KAFKA_BROKERS is not set: start the test services first (scripts/services.sh up)");
        return;
    };
    let connections = env_or("ALLUVIUM_BENCH_CONNECTIONS", 16);
    let batch = env_or("ALLUVIUM_BENCH_BATCH", 100).max(1);
    let seconds = env_or("ALLUVIUM_BENCH_SECONDS", 10) as u64;
    let prefix = format!("benchapi{}_", std::process::id());

    // Realistic order events from the project's generator.
    let cfg = GeneratorConfig {
        orders: 20_000,
        ..GeneratorConfig::default()
    };
    let topics = Topics::with_prefix("");
    let events: Arc<Vec<Vec<u8>>> = Arc::new(
        generate(&cfg, &topics)
            .into_iter()
            .filter(|m| m.topic == topics.orders && m.payload.first() == Some(&b'{'))
            .map(|m| m.payload)
            .collect(),
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_alluvium"))
        .args(["ingest", "api", "--no-auth", "--listen", "127.0.0.1:0"])
        .args(["--brokers", &brokers, "--topic-prefix", &prefix])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting alluvium ingest api");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listen line");
    let url = format!(
        "{}/v1/orders",
        line.trim().trim_start_matches("listening on ")
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acknowledged = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let started = Instant::now();
    rt.block_on(async {
        let client = reqwest::Client::new();
        // Wait until the service is ready.
        let ready = url.replace("/v1/orders", "/readyz");
        while client
            .get(&ready)
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = Instant::now();
        let tasks: Vec<_> = (0..connections)
            .map(|c| {
                let (client, url, events) = (client.clone(), url.clone(), events.clone());
                let (acknowledged, requests, latency) =
                    (acknowledged.clone(), requests.clone(), latency.clone());
                tokio::spawn(async move {
                    let mut next = c * 997;
                    while started.elapsed() < Duration::from_secs(seconds) {
                        let mut body = Vec::with_capacity(batch * 400);
                        for _ in 0..batch {
                            body.extend_from_slice(&events[next % events.len()]);
                            body.push(b'\n');
                            next += 1;
                        }
                        let t = Instant::now();
                        let r = client
                            .post(&url)
                            .header("content-type", "application/x-ndjson")
                            .body(body)
                            .send()
                            .await;
                        let took = t.elapsed().as_micros() as u64;
                        if matches!(&r, Ok(r) if r.status() == 202) {
                            acknowledged.fetch_add(batch as u64, Ordering::Relaxed);
                            requests.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut h) = latency.lock() {
                                let _ = h.record(took.max(1));
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let rss = peak_rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let h = latency.lock().expect("histogram");
    let acked = acknowledged.load(Ordering::Relaxed);
    println!(
        "ingest api: {connections} connections x NDJSON batches of {batch}, {seconds} s: \
         {:.0} events/s acknowledged, {:.0} requests/s, latency p50 {:.1} ms p99 {:.1} ms \
         max {:.1} ms, service peak RSS {rss:.0} MiB",
        acked as f64 / elapsed,
        requests.load(Ordering::Relaxed) as f64 / elapsed,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
}
