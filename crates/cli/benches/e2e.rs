//! End-to-end benchmark: Kafka → `alluvium run` → Iceberg lake + PostgreSQL warehouse.
//!
//! For each rate (order events per second, `ALLUVIUM_BENCH_RATES`, default `10000,100000`)
//! it produces generated order events at that steady rate for `ALLUVIUM_BENCH_SECONDS`
//! (default 20) into the test broker while the release `alluvium` binary runs continuously
//! with `--lake` and `--warehouse-url`, and measures, for every event, the time from its
//! Kafka append (delivery report) to the moment the warehouse's `pipeline.progress` row —
//! committed in the same transaction as the gold rows — covers its offset. Reported:
//! produced and committed events/s, p50/p99/max latency (hdrhistogram), the pipeline's peak
//! RSS.
//!
//! `ALLUVIUM_BENCH_BACKLOG=1` produces every event before the pipeline starts and reports how
//! fast it catches up (events/s, the pipeline's and the machine's CPU time per 1k events);
//! `ALLUVIUM_BENCH_ARGS` adds options to `alluvium run`; `ALLUVIUM_BENCH_LAKE_ARGS` replaces
//! its `--lake <tempdir>` (e.g. `--lake-warehouse file:///… --lake-catalog-uri http://…` for a
//! REST catalog).
//!
//! Needs the test services: `scripts/services.sh up && source $ALLUVIUM_SERVICES_DIR/env`,
//! then `cargo bench -p alluvium-cli --bench e2e`. Without them it says so and exits.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alluvium_connectors::kafka::admin::ensure_topic;
use alluvium_connectors::kafka::KafkaConfig;
use alluvium_engine::{PartitionId, Positions};
use alluvium_medallion::generate::{generate, GeneratorConfig};
use alluvium_medallion::Topics;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

type SendTimes = Arc<Mutex<HashMap<(i32, i64), Instant>>>;

struct Timing {
    appended: SendTimes,
}
impl ClientContext for Timing {}
impl ProducerContext for Timing {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            if let Ok(mut t) = self.appended.lock() {
                t.insert((m.partition(), m.offset()), Instant::now());
            }
        }
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-qAtc", sql])
        .output()
        .expect("psql");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU seconds (user + system) the process has used so far, from `/proc/<pid>/stat`.
fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at its `)`.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            // Clock ticks: 100 per second on Linux (USER_HZ).
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// CPU seconds the whole machine has been busy (all but idle and iowait), from `/proc/stat`.
fn machine_busy_secs() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?;
            let ticks: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            let total: f64 = ticks.iter().take(8).sum();
            let idle = ticks.get(3)? + ticks.get(4)?;
            Some((total - idle) / 100.0)
        })
        .unwrap_or(0.0)
}

fn run_at(brokers: &str, admin_url: &str, rate: usize, seconds: u64, backlog: bool) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tag = format!("e2e{}x{}", rate, nanos % 1_000_000_000);
    let prefix = format!("{tag}-");
    let topics = Topics::with_prefix(&prefix);
    // The topics stay on the broker: `alluvium run --topic-prefix` can read them again.
    println!("topic prefix: {prefix}");
    let kafka = KafkaConfig::new(brokers.to_string());
    for t in topics.all() {
        ensure_topic(&kafka, &t, 4).expect("creating topics");
    }
    psql(admin_url, &format!("CREATE DATABASE {tag}"));
    let url = format!(
        "{}/{tag}",
        admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(admin_url)
    );

    // Data: enough order events for the whole run; dimensions first.
    let events_needed = rate * seconds as usize;
    let cfg = GeneratorConfig {
        seed: 7,
        orders: events_needed / 3 + 1,
        products: 2_000,
        customers: 20_000,
        invalid_rate: 0.01,
        duplicate_rate: 0.01,
        product_files: 2,
    };
    let messages = generate(&cfg, &topics);
    let (orders, dims): (Vec<_>, Vec<_>) =
        messages.into_iter().partition(|m| m.topic == topics.orders);

    let appended: SendTimes = Arc::new(Mutex::new(HashMap::with_capacity(events_needed)));
    let producer: ThreadedProducer<Timing> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Timing {
            appended: appended.clone(),
        })
        .expect("producer");
    for m in &dims {
        let mut r = BaseRecord::to(&m.topic).payload(&m.payload);
        if let Some(k) = &m.key {
            r = r.key(k);
        }
        while producer.send(r).is_err() {
            std::thread::sleep(Duration::from_millis(5));
            r = BaseRecord::to(&m.topic).payload(&m.payload);
            if let Some(k) = &m.key {
                r = r.key(k);
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    appended.lock().expect("lock").clear();

    // Backlog mode: every order event is in the topics before the pipeline starts, so the
    // run measures how fast the pipeline catches up, with no load generator beside it.
    let produced_before = backlog.then(|| {
        let (sent, secs) = produce_orders(&producer, &orders, events_needed, None);
        println!("backlog: produced {sent} order events in {secs:.1}s");
        (sent, secs)
    });

    let lake = tempfile::tempdir().expect("tempdir");
    let pipeline_start = Instant::now();
    let busy_at_start = machine_busy_secs();
    let mut pipeline = Command::new(env!("CARGO_BIN_EXE_alluvium"))
        .args([
            "run",
            "--brokers",
            brokers,
            "--topic-prefix",
            &prefix,
            "--state",
        ])
        .arg(lake.path().join("state"))
        .args(lake_args(&lake.path().join("lake")))
        .args(["--warehouse-url", &url, "-w", "2", "--epoch-ms", "200"])
        // More `alluvium run` options, for trying settings: ALLUVIUM_BENCH_ARGS="--opt value".
        .args(
            std::env::var("ALLUVIUM_BENCH_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env(
            "RUST_LOG",
            std::env::var("ALLUVIUM_BENCH_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("starting alluvium run");
    // Wait for the dimensions to be committed.
    let started = Instant::now();
    while psql(&url, "SELECT count(*) FROM pipeline.progress").trim() != "1" {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the pipeline committed nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Poller: latency of every order offset the warehouse progress covers.
    let done = Arc::new(AtomicBool::new(false));
    let covered = Arc::new(AtomicU64::new(0));
    let poller = {
        let (done, covered, appended, url, orders_topic) = (
            done.clone(),
            covered.clone(),
            appended.clone(),
            url.clone(),
            topics.orders.clone(),
        );
        std::thread::spawn(move || {
            // One connection polled every few milliseconds: starting `psql` per poll cost
            // the two cores of this machine ~40 % (perf), which the pipeline then lacked.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connecting to the warehouse");
                tokio::spawn(connection);
                client
            });
            let progress = || -> String {
                rt.block_on(async {
                    match client
                        .query_opt("SELECT positions::text FROM pipeline.progress", &[])
                        .await
                    {
                        Ok(Some(row)) => row.get::<_, String>(0),
                        _ => String::new(),
                    }
                })
            };
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
            let mut seen = [0i64; 4];
            let mut last_cover = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let text = progress();
                let now = Instant::now();
                if let Ok(p) = serde_json::from_str::<Positions>(text.trim()) {
                    let times = appended.lock().expect("lock");
                    for (part, seen_to) in seen.iter_mut().enumerate() {
                        let to = p
                            .get(&PartitionId::new(orders_topic.clone(), part as i32))
                            .unwrap_or(0);
                        for off in *seen_to..to {
                            if let Some(t) = times.get(&(part as i32, off)) {
                                let _ =
                                    hist.record(now.duration_since(*t).as_micros().max(1) as u64);
                                covered.fetch_add(1, Ordering::Relaxed);
                                last_cover = now;
                            }
                        }
                        *seen_to = (*seen_to).max(to);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (hist, last_cover)
        })
    };

    let begin = Instant::now();
    let (sent, produce_secs) = match produced_before {
        Some(produced) => produced,
        None => produce_orders(&producer, &orders, events_needed, Some(rate)),
    };
    // Drain: wait until the warehouse covers everything (or give up after 120 s).
    let drain_start = Instant::now();
    while (covered.load(Ordering::Relaxed) as usize) < sent
        && drain_start.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    let (hist, last_cover) = poller.join().expect("poller");
    let rss = peak_rss_mib(pipeline.id());
    let cpu = cpu_secs(pipeline.id());
    let machine = machine_busy_secs() - busy_at_start;
    let _ = pipeline.kill();
    let _ = pipeline.wait();
    let n = covered.load(Ordering::Relaxed);
    if backlog {
        let secs = last_cover.duration_since(pipeline_start).as_secs_f64();
        println!(
            "backlog of {sent} order events: committed {n} in {secs:.1}s from the pipeline's start ({:.0}/s end to end), pipeline CPU {cpu:.1} s ({:.1} ms per 1k events), machine busy {machine:.1} s ({:.1} ms per 1k events), peak RSS {rss:.0} MiB",
            n as f64 / secs,
            cpu * 1e6 / n.max(1) as f64,
            machine * 1e6 / n.max(1) as f64
        );
        return;
    }
    let total_secs = last_cover.duration_since(begin).as_secs_f64();
    println!(
        "rate {rate}/s for {seconds}s: produced {sent} in {produce_secs:.1}s ({:.0}/s), committed {n} ({:.0}/s end to end), latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, pipeline CPU {cpu:.1} s, peak RSS {rss:.0} MiB",
        sent as f64 / produce_secs,
        n as f64 / total_secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
    );
}

/// Produces the first `count` order events, paced at `rate` per second in 10 ms slices, or as
/// fast as the producer takes them when `rate` is `None`. Returns the number sent and the
/// seconds until the last was acknowledged.
fn produce_orders(
    producer: &ThreadedProducer<Timing>,
    orders: &[alluvium_medallion::fixture::Message],
    count: usize,
    rate: Option<usize>,
) -> (usize, f64) {
    let begin = Instant::now();
    let per_slice = rate.map_or(usize::MAX, |r| (r / 100).max(1));
    let mut sent = 0usize;
    let mut it = orders.iter().take(count);
    'outer: for slice in 0.. {
        for _ in 0..per_slice {
            let Some(m) = it.next() else { break 'outer };
            let mut r = BaseRecord::to(&m.topic).payload(&m.payload);
            if let Some(k) = &m.key {
                r = r.key(k);
            }
            while let Err((_, back)) = producer.send(r) {
                r = back;
                producer.poll(Duration::from_millis(1));
            }
            sent += 1;
        }
        let due = begin + Duration::from_millis(10 * (slice + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    (sent, begin.elapsed().as_secs_f64())
}

fn main() {
    let (Ok(brokers), Ok(pg)) = (
        std::env::var("ALLUVIUM_KAFKA_BROKERS"),
        std::env::var("ALLUVIUM_PG_URL"),
    ) else {
        eprintln!(
            "e2e bench: start the test services first (scripts/services.sh up; source its env)"
        );
        return;
    };
    let seconds: u64 = std::env::var("ALLUVIUM_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let rates: Vec<usize> = std::env::var("ALLUVIUM_BENCH_RATES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let backlog = std::env::var("ALLUVIUM_BENCH_BACKLOG").is_ok_and(|v| v == "1");
    for rate in rates {
        run_at(&brokers, &pg, rate, seconds, backlog);
    }
}

/// Where `alluvium run` commits the lake: `ALLUVIUM_BENCH_LAKE_ARGS`, or a local lake in `dir`.
fn lake_args(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    match std::env::var("ALLUVIUM_BENCH_LAKE_ARGS") {
        Ok(args) => args.split_whitespace().map(Into::into).collect(),
        Err(_) => vec!["--lake".into(), dir.into()],
    }
}
