//! Order event validation alone (spec §3.1: parse, ten rules, normalisation): order events
//! per second on one thread (`cargo bench -p alluvium-benches --bench parse`). The parser is
//! the busiest operator of the medallion graph (`ALLUVIUM_OPERATOR_TIMES=1`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use alluvium_medallion::codes::Currencies;
use alluvium_medallion::generate::{generate_input, GeneratorConfig};
use alluvium_medallion::orders::validate;
use alluvium_medallion::Topics;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn parse(c: &mut Criterion) {
    let cfg = GeneratorConfig {
        seed: 7,
        orders: 20_000,
        products: 2_000,
        customers: 20_000,
        ..GeneratorConfig::default()
    };
    let input = generate_input(&cfg, &Topics::with_prefix(""));
    let payloads: Vec<Vec<u8>> = input.orders.into_iter().map(|m| m.payload).collect();
    let currencies = Currencies::default();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function(format!("validate_{}_order_events", payloads.len()), |b| {
        b.iter(|| {
            payloads
                .iter()
                .filter(|p| validate(p, &currencies).is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
