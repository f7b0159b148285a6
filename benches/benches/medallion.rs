//! Full medallion graph over generated data, in memory: order events per second on 1 and 2
//! workers (`cargo bench -p alluvium-benches --bench medallion`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use alluvium_engine::sinks::null::NullSink;
use alluvium_medallion::generate::{generate, GeneratorConfig};
use alluvium_medallion::memory::{partition, run_into};
use alluvium_medallion::{PipelineConfig, Topics};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn throughput(c: &mut Criterion) {
    alluvium_benches::setup();
    let orders: usize = std::env::var("ALLUVIUM_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let cfg = GeneratorConfig {
        seed: 7,
        orders,
        products: 2_000,
        customers: 20_000,
        ..GeneratorConfig::default()
    };
    let topics = Topics::with_prefix("");
    let messages = generate(&cfg, &topics);
    let order_events = messages.iter().filter(|m| m.topic == topics.orders).count();
    let logs = partition(&messages, 4);
    let config = PipelineConfig::default();
    let mut group = c.benchmark_group("medallion_in_memory");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(order_events as u64));
    for workers in [1, 2] {
        group.bench_function(
            format!("{workers}_workers_{order_events}_order_events"),
            |b| {
                b.iter(|| {
                    run_into(&logs, &NullSink::new(), workers, 200_000, &config).expect("pipeline")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
