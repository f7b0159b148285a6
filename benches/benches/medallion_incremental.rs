//! The cost of one small epoch on top of a large history: the medallion graph is loaded with
//! `ALLUVIUM_BENCH_HISTORY` order events (default 2,000,000, replayed in epochs of
//! `ALLUVIUM_BENCH_HISTORY_EPOCH` messages, default 200,000), then fed
//! `ALLUVIUM_BENCH_EPOCHS` (default 100) epochs of 1,000 new events; prints the history load
//! rate, p50/p99/max latency per epoch, RSS after the load and peak RSS.
//!
//! Arrangements finish their merges while idle as `alluvium run` configures them
//! (`alluvium_engine::merging`; `ALLUVIUM_BENCH_IDLE_EFFORT` sets the effort, `0` turns it
//! off), and `ALLUVIUM_BENCH_SETTLE_MS` (default 5,000) lets the workers idle that long
//! between the load and the small epochs, as a live pipeline idles between epochs (`0`: the
//! small epochs follow the load at once and pay for its merges).
//! `ALLUVIUM_BENCH_EPOCH_INTERVAL_MS` (default 0: back to back) starts the small epochs that
//! far apart, the workers idling in between.
//!
//! `cargo bench -p alluvium-benches --bench medallion_incremental`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use alluvium_connectors::kafka::KafkaRecord;
use alluvium_medallion::generate::{generate, GeneratorConfig};
use alluvium_medallion::{medallion, PipelineConfig, Topics};
use differential_dataflow::input::Input;
use hdrhistogram::Histogram;
use timely::dataflow::operators::Probe;

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

fn current_rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Lets the worker step (or park) for `duration` with no new input, as between epochs.
/// Idles the worker for `duration`, first closing an empty epoch (advancing `input` past
/// `time`), as `alluvium run`'s source does when an arrangement waits to merge in idle time:
/// its frontier change schedules the arrangements (`alluvium_engine::merging`). Every worker
/// does it, so their epochs stay in step.
fn idle_for(
    worker: &mut timely::worker::Worker,
    input: &mut differential_dataflow::input::InputSession<u64, KafkaRecord, isize>,
    time: &mut u64,
    duration: std::time::Duration,
) {
    let _ = alluvium_engine::merging::take_idle_merge_request();
    *time += 1;
    input.advance_to(*time);
    input.flush();
    let start = Instant::now();
    while let Some(left) = duration.checked_sub(start.elapsed()) {
        worker.step_or_park(Some(left));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    alluvium_benches::setup();
    let history: usize = std::env::var("ALLUVIUM_BENCH_HISTORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let workers: usize = std::env::var("ALLUVIUM_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // History is replayed in epochs of this many messages, as `alluvium replay` does: one
    // giant epoch would hold every message's intermediate state at once.
    let history_epoch: usize = std::env::var("ALLUVIUM_BENCH_HISTORY_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(200_000);
    const EPOCH: usize = 1_000;
    let epochs: usize = std::env::var("ALLUVIUM_BENCH_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(100);
    let topics = Topics::with_prefix("");
    // About 2.6 events per order.
    let cfg = GeneratorConfig {
        seed: 11,
        orders: (history + EPOCH * epochs) * 10 / 26,
        products: 5_000,
        customers: 100_000,
        ..GeneratorConfig::default()
    };
    let t = Instant::now();
    let messages = generate(&cfg, &topics);
    let records: Arc<Vec<KafkaRecord>> = Arc::new(
        messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| KafkaRecord {
                topic: Arc::from(m.topic.as_str()),
                partition: 0,
                offset: i as i64,
                key: m.key,
                payload: Some(m.payload),
                timestamp_ms: None,
                origin: None,
                ingested_at: 0,
            })
            .collect(),
    );
    let split = records.len().saturating_sub(EPOCH * epochs);
    eprintln!(
        "generated {} messages in {:.1?}; history {} messages, then {epochs} epochs of {EPOCH}",
        records.len(),
        t.elapsed(),
        split
    );

    let idle_effort: Option<usize> = match std::env::var("ALLUVIUM_BENCH_IDLE_EFFORT") {
        Ok(v) => v.parse().ok(),
        Err(_) => Some(alluvium_engine::merging::DEFAULT_IDLE_MERGE_EFFORT),
    };
    let settle_ms: u64 = std::env::var("ALLUVIUM_BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    // Epochs start this far apart (0: back to back); the workers idle in between, as a live
    // pipeline does between its epochs.
    let interval = std::time::Duration::from_millis(
        std::env::var("ALLUVIUM_BENCH_EPOCH_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let mut config = timely::Config::process(workers);
    alluvium_engine::merging::idle_merging(&mut config.worker, idle_effort);
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let config = PipelineConfig::default();
        let ctx = alluvium_engine::WorkerContext::new(index, peers);
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, records) = scope.new_collection::<KafkaRecord, isize>();
            let outputs = medallion(records, &config, &ctx);
            // As the engine's sinks do: idle merging waits while an epoch is on its way here.
            let tables = alluvium_engine::merging::track_arrivals(outputs.tables.inner);
            let probe = timely::dataflow::ProbeHandle::new();
            tables.probe_with(&probe);
            (input, probe)
        });
        let t = Instant::now();
        let mut epoch = 0u64;
        for chunk in records[..split].chunks(history_epoch) {
            for r in chunk.iter().skip(index).step_by(peers) {
                input.insert(r.clone());
            }
            epoch += 1;
            input.advance_to(epoch);
            input.flush();
            alluvium_engine::merging::inputs_sealed_to(epoch);
            // Let at most two epochs be in flight, as a paced replay would.
            worker.step_or_park_while(None, || probe.less_than(&epoch.saturating_sub(1)));
        }
        worker.step_or_park_while(None, || probe.less_than(&epoch));
        let load = t.elapsed();
        idle_for(
            worker,
            &mut input,
            &mut epoch,
            std::time::Duration::from_millis(settle_ms),
        );
        let rss_after_load = current_rss_mib();
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let mut paced = Instant::now();
        for e in 0..epochs {
            let start = split + e * EPOCH;
            if let Some(wait) = interval.checked_sub(paced.elapsed()) {
                idle_for(worker, &mut input, &mut epoch, wait);
            }
            paced = Instant::now();
            let t = Instant::now();
            for r in records[start..start + EPOCH].iter().skip(index).step_by(peers) {
                input.insert(r.clone());
            }
            epoch += 1;
            let next = epoch;
            input.advance_to(next);
            input.flush();
            alluvium_engine::merging::inputs_sealed_to(next);
            worker.step_or_park_while(None, || probe.less_than(&next));
            let _ = hist.record(t.elapsed().as_micros() as u64);
            if index == 0 && std::env::var_os("ALLUVIUM_BENCH_VERBOSE").is_some() {
                let slice = &records[start..start + EPOCH];
                let count = |name: &str| slice.iter().filter(|r| &*r.topic == name).count();
                // Uptime (CLOCK_BOOTTIME, as `perf record -k boottime` stamps samples).
                let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
                eprintln!(
                    "epoch {e}: {:.1} ms ({} products, {} customers) ending at uptime {}",
                    t.elapsed().as_secs_f64() * 1000.0,
                    count("products"),
                    count("customers"),
                    uptime.split_whitespace().next().unwrap_or("?")
                );
            }
        }
        if index == 0 {
            println!(
                "medallion_incremental: workers={peers} history={split} messages loaded in {load:.2?} ({:.0} msg/s); \
                 idle {settle_ms} ms; 1k-event epochs every {interval:?}, latency p50={:.1} ms p99={:.1} ms max={:.1} ms; RSS after load {:.0} MiB, peak RSS {:.0} MiB",
                split as f64 / load.as_secs_f64(),
                hist.value_at_quantile(0.5) as f64 / 1000.0,
                hist.value_at_quantile(0.99) as f64 / 1000.0,
                hist.max() as f64 / 1000.0,
                rss_after_load,
                peak_rss_mib()
            );
        }
    })
    .expect("timely");
    drop(guards);
}
