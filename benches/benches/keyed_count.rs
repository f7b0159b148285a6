//! Engine throughput: the demo graph (count and sum per key) over generated records,
//! in memory and through a real Kafka-protocol broker.
//!
//! `cargo bench -p alluvium-benches` — the broker part runs when `ALLUVIUM_KAFKA_BROKERS`
//! is set (e.g. after `scripts/services.sh up` and sourcing its env file).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use alluvium_connectors::kafka::admin::ensure_topic;
use alluvium_connectors::kafka::producer::ReliableProducer;
use alluvium_connectors::kafka::{kafka_source, KafkaConfig};
use alluvium_engine::demo::keyed_stats;
use alluvium_engine::sinks::null::NullSink;
use alluvium_engine::{
    commit_sink, execute, partitioned_source, ClusterConfig, EpochPolicy, MemoryLog, ResumePlan,
    RunMode, SourceOptions,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use timely::dataflow::operators::probe::Handle as ProbeHandle;

const RECORDS: usize = 2_000_000;

fn log(records: usize) -> MemoryLog<(u32, i64)> {
    let mut x = 0x2545F4914F6CDD1Du64;
    let partitions = 4;
    MemoryLog {
        topic: "bench".into(),
        partitions: (0..partitions)
            .map(|_| {
                Arc::new(
                    (0..records / partitions)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            ((x % 10_000) as u32, (x >> 32) as i64 % 100)
                        })
                        .collect(),
                )
            })
            .collect(),
    }
}

fn options() -> SourceOptions {
    SourceOptions {
        epochs: EpochPolicy {
            max_records: 200_000,
            max_duration: Duration::from_millis(500),
            max_inflight_epochs: 4,
        },
        mode: RunMode::UntilIdle { idle_timeout: None },
        batch: 64 * 1024,
    }
}

fn run_memory(log: &MemoryLog<(u32, i64)>, workers: usize) {
    let log = log.clone();
    let sink = NullSink::new();
    let plan = ResumePlan::fresh();
    let options = options();
    execute(&ClusterConfig::single(workers), move |worker, ctx| {
        let probe = ProbeHandle::new();
        worker.dataflow(|scope| {
            let (records, positions) = partitioned_source(
                scope,
                "memory",
                ctx,
                &options,
                &plan,
                Some(probe.clone()),
                |src| Ok(log.reader(src.worker.index, src.worker.peers, &plan)),
            );
            commit_sink(keyed_stats(records), positions, &sink, &plan, ctx, &probe)
                .map_err(|e| e.to_string())
        })
    })
    .expect("bench pipeline");
}

fn in_memory(c: &mut Criterion) {
    alluvium_benches::setup();
    let log = log(RECORDS);
    let mut group = c.benchmark_group("keyed_stats_in_memory");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(RECORDS as u64));
    for workers in [1, 2] {
        group.bench_function(format!("{workers}_workers"), |b| {
            b.iter(|| run_memory(&log, workers))
        });
    }
    group.finish();
}

fn over_broker(c: &mut Criterion) {
    alluvium_benches::setup();
    let Ok(brokers) = std::env::var("ALLUVIUM_KAFKA_BROKERS") else {
        eprintln!("ALLUVIUM_KAFKA_BROKERS not set: skipping the broker benchmark");
        return;
    };
    const N: usize = 500_000;
    let config = KafkaConfig::new(brokers);
    let topic = format!("bench-{}", std::process::id());
    ensure_topic(&config, &topic, 4).expect("create topic");
    let producer = ReliableProducer::new(&config).expect("producer");
    for i in 0..N {
        let key = format!("k{}", i % 10_000);
        producer
            .send(
                &topic,
                Some(key.as_bytes()),
                (i % 100).to_string().as_bytes(),
            )
            .expect("send");
    }
    producer.flush(Duration::from_secs(120)).expect("flush");

    let mut group = c.benchmark_group("keyed_stats_over_broker");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(N as u64));
    for workers in [1, 2] {
        group.bench_function(format!("{workers}_workers"), |b| {
            b.iter(|| {
                let config = config.clone();
                let topics = vec![topic.clone()];
                let sink = NullSink::new();
                let plan = ResumePlan::fresh();
                let options = options();
                execute(&ClusterConfig::single(workers), move |worker, ctx| {
                    let probe = ProbeHandle::new();
                    worker.dataflow(|scope| {
                        let (records, positions) = kafka_source(
                            scope,
                            &config,
                            &topics,
                            ctx,
                            &options,
                            &plan,
                            Some(probe.clone()),
                        );
                        let parsed = records.flat_map(|r| {
                            let key = std::str::from_utf8(r.key.as_deref()?)
                                .ok()?
                                .trim_start_matches('k')
                                .parse::<u32>()
                                .ok()?;
                            let value = std::str::from_utf8(r.payload.as_deref()?)
                                .ok()?
                                .parse::<i64>()
                                .ok()?;
                            Some((key, value))
                        });
                        commit_sink(keyed_stats(parsed), positions, &sink, &plan, ctx, &probe)
                            .map_err(|e| e.to_string())
                    })
                })
                .expect("bench pipeline");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, in_memory, over_broker);
criterion_main!(benches);
