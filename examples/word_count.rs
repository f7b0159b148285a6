//! A custom pipeline on the engine alone (no medallion crate): words counted over a
//! partitioned in-memory log, committed exactly once to a durable file table.
//!
//! ```sh
//! cargo run -p alluvium-examples --example word_count
//! ```
//!
//! Swap `MemoryLog` for `alluvium_connectors::kafka::kafka_source` to read a topic instead.

use std::sync::Arc;

use alluvium_engine::sinks::file::FileSink;
use alluvium_engine::{
    commit_sink, execute, partitioned_source, ClusterConfig, MemoryLog, Rehydration, ResumePlan,
    RunMode, Sink, SourceOptions,
};
use timely::dataflow::operators::probe::Handle as ProbeHandle;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Two partitions of text lines; a record's offset is its index.
    let log = MemoryLog {
        topic: "lines".into(),
        partitions: vec![
            Arc::new(vec![
                "the quick brown fox".to_string(),
                "jumps over the lazy dog".to_string(),
            ]),
            Arc::new(vec![
                "the dog sleeps".to_string(),
                "the fox runs".to_string(),
            ]),
        ],
    };
    let dir = std::env::temp_dir().join(format!("alluvium-word-count-{}", std::process::id()));
    let sink = FileSink::<(String, isize)>::new(&dir);

    // Resume from whatever the table already committed (nothing on the first run).
    let plan = ResumePlan::from_checkpoints([sink.checkpoint()?], Rehydration::FromStart)?;
    let options = SourceOptions {
        mode: RunMode::UntilIdle { idle_timeout: None },
        ..SourceOptions::default()
    };
    let table = sink.clone();
    execute(&ClusterConfig::single(2), move |worker, ctx| {
        let probe = ProbeHandle::new();
        worker.dataflow(|scope| {
            let (lines, positions) = partitioned_source(
                scope,
                "lines",
                ctx,
                &options,
                &plan,
                Some(probe.clone()),
                |src| Ok(log.reader(src.worker.index, src.worker.peers, &plan)),
            );
            let counts = lines
                .flat_map(|line: String| {
                    line.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .count();
            commit_sink(counts, positions, &table, &plan, ctx, &probe).map_err(|e| e.to_string())
        })
    })?;

    let state = sink.read_state()?.ok_or("nothing committed")?;
    println!("committed epoch {} to {}", state.epoch, dir.display());
    for ((word, count), _) in state.rows {
        println!("{word:>8} {count}");
    }
    Ok(())
}
