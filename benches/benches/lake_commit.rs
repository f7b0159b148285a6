//! The lake committer of a current-state table, alone: stage and commit epochs of changes
//! (inserts, and retractions that become position deletes) to a local Iceberg table
//! partitioned like `silver.order_items` (`bucket[4]` of a string id), and report changed
//! rows per second (`cargo bench -p alluvium-benches --bench lake_commit`).
//!
//! Each iteration is a fresh lake: one epoch of `ROWS` inserts, then `EPOCHS` epochs that
//! each retract a quarter of the live rows and insert as many new ones. Only the staging and
//! the commits are timed, not the lake's creation.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use alluvium_connectors::lake::{
    Column, ColumnType, IcebergSink, LakeConfig, TableDef, TableMode, Transform, Value,
};
use alluvium_engine::{Positions, Sink, SinkCommitter, SinkWriter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ROWS: u64 = 40_000;
const EPOCHS: u64 = 4;

/// An order line: order id, line number, product id, quantity, unit price (cents), time.
type Line = (String, i64, String, i64, i128, i64);

fn def() -> TableDef {
    use ColumnType::*;
    TableDef::new(
        "silver",
        "order_items",
        TableMode::CurrentState,
        vec![
            Column::required("order_id", String),
            Column::required("line", Long),
            Column::optional("product_id", String),
            Column::optional("quantity", Long),
            Column::optional("unit_price", Decimal(18, 2)),
            Column::optional("updated_at", Timestamptz),
        ],
    )
    .partitioned_by("order_id", Transform::Bucket(4))
}

fn line(i: u64, version: u64) -> Line {
    (
        format!("O-{:010}", i / 3),
        (i % 3) as i64,
        format!("P-{:05}", (i * 7919) % 2_000),
        (1 + (i + version) % 5) as i64,
        (100 + (i * 37) % 90_000) as i128,
        1_764_000_000_000_000 + (i * 1_000_003) as i64,
    )
}

/// Stages and commits the epochs into a fresh lake; returns the time they took and the
/// number of changed rows.
fn run_once() -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LakeConfig::local(dir.path()).expect("lake config");
    let sink = IcebergSink::new(config, vec![def()], |l: &Line| {
        Some((
            0,
            vec![
                Value::String(l.0.as_str().into()),
                Value::Long(l.1),
                Value::String(l.2.as_str().into()),
                Value::Long(l.3),
                Value::Decimal(l.4),
                Value::Long(l.5),
            ],
        ))
    })
    .expect("sink");
    sink.table_checkpoints().expect("checkpoints");
    let mut writer = sink.writer(0).expect("writer");
    let mut committer = sink.committer().expect("committer");
    let mut live: Vec<Line> = (0..ROWS).map(|i| line(i, 0)).collect();
    let mut updates: Vec<(Line, isize)> = live.iter().map(|l| (l.clone(), 1)).collect();
    let mut changed = 0;
    let mut took = Duration::ZERO;
    let mut next = ROWS;
    for epoch in 0..=EPOCHS {
        let started = Instant::now();
        let staged: Vec<_> = writer
            .stage(epoch, &updates)
            .expect("stage")
            .into_iter()
            .collect();
        committer
            .commit(epoch, &staged, &Positions::new())
            .expect("commit");
        took += started.elapsed();
        changed += updates.len() as u64;
        // The next epoch: a quarter of the live rows replaced by new ones.
        updates.clear();
        for slot in live.iter_mut().step_by(4) {
            let new = line(next, epoch + 1);
            next += 1;
            updates.push((std::mem::replace(slot, new.clone()), -1));
            updates.push((new, 1));
        }
    }
    (took, changed)
}

fn commits(c: &mut Criterion) {
    alluvium_benches::setup();
    let (_, changed) = run_once();
    let mut group = c.benchmark_group("lake_commit");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(changed));
    group.bench_function(format!("current_state_bucket4_{changed}_changes"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_once().0).sum())
    });
    group.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
