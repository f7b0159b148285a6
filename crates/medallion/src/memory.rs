//! Running the pipeline over in-memory messages: tests, benches, and quick local checks.
//!
//! Messages are spread over the partitions of their topic by key (like Kafka's default
//! partitioner: same key, same partition; no key: round-robin), then read by the engine's
//! in-memory source exactly as the Kafka source would read them.

use std::path::Path;
use std::sync::Arc;

use alluvium_connectors::kafka::KafkaRecord;
use alluvium_engine::sinks::file::FileSink;
use alluvium_engine::{
    commit_sink, execute, partitioned_source, ClusterConfig, EngineError, EpochPolicy, MemoryLog,
    Rehydration, ReplayLog, ResumePlan, RunMode, Sink, SourceOptions,
};
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use crate::fixture::Message;
use crate::graph::{medallion, PipelineConfig};
use crate::rows::TableRow;

/// FNV-1a, a fixed hash so that partitioning is the same on every run.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Spreads messages over `partitions` partitions per topic; returns one log per topic.
pub fn partition(messages: &[Message], partitions: usize) -> Vec<MemoryLog<KafkaRecord>> {
    let mut topics: Vec<(String, Vec<Vec<KafkaRecord>>)> = Vec::new();
    let mut round_robin = 0usize;
    for m in messages {
        let idx = match topics.iter().position(|(t, _)| *t == m.topic) {
            Some(i) => i,
            None => {
                topics.push((m.topic.clone(), vec![Vec::new(); partitions]));
                topics.len() - 1
            }
        };
        let p = match &m.key {
            Some(k) => (fnv(k) % partitions as u64) as usize,
            None => {
                round_robin += 1;
                round_robin % partitions
            }
        };
        let log = &mut topics[idx].1[p];
        log.push(KafkaRecord {
            topic: Arc::from(m.topic.as_str()),
            partition: p as i32,
            offset: log.len() as i64,
            key: m.key.clone(),
            payload: Some(m.payload.clone()),
            timestamp_ms: None,
            origin: None,
            ingested_at: 0,
        });
    }
    topics
        .into_iter()
        .map(|(topic, parts)| MemoryLog {
            topic,
            partitions: parts.into_iter().map(Arc::new).collect(),
        })
        .collect()
}

/// Runs the pipeline over `logs` until they are drained, committing every table to a file
/// sink in `state` (resuming from it if it holds a checkpoint). Returns the committed rows.
pub fn run(
    logs: &[MemoryLog<KafkaRecord>],
    state: &Path,
    workers: usize,
    epoch_records: usize,
    config: &PipelineConfig,
) -> Result<Vec<TableRow>, EngineError> {
    let sink = FileSink::<TableRow>::new(state);
    run_into(logs, &sink, workers, epoch_records, config)?;
    let rows = sink
        .read_state()
        .map_err(|e| EngineError::Worker {
            worker: 0,
            message: e.to_string(),
        })?
        .map(|s| s.expanded_rows())
        .unwrap_or_default();
    Ok(rows)
}

/// Runs the pipeline over `logs` until they are drained, into any sink of table rows.
pub fn run_into<S: Sink<TableRow>>(
    logs: &[MemoryLog<KafkaRecord>],
    sink: &S,
    workers: usize,
    epoch_records: usize,
    config: &PipelineConfig,
) -> Result<(), EngineError> {
    let checkpoint = sink.checkpoint().map_err(|e| EngineError::Worker {
        worker: 0,
        message: e.to_string(),
    })?;
    let table = sink.clone();
    run_graph(
        logs,
        vec![checkpoint],
        workers,
        epoch_records,
        config,
        move |outputs, positions, plan, ctx, probe| {
            commit_sink(outputs.tables, positions, &table, plan, ctx, probe)
                .map_err(|e| e.to_string())
        },
    )
}

/// Runs the pipeline over `logs` (in-memory or recorded, e.g. a lake's bronze tables) until
/// they are drained into every sink of `sinks` (file tables, lake, warehouse), resuming from
/// their checkpoints.
pub fn run_with_sinks<L: ReplayLog<Record = KafkaRecord>>(
    logs: &[L],
    sinks: crate::sinks::PipelineSinks,
    workers: usize,
    epoch_records: usize,
    config: &PipelineConfig,
) -> Result<(), EngineError> {
    let sink_error = |e: alluvium_engine::SinkError| EngineError::Worker {
        worker: 0,
        message: e.to_string(),
    };
    // Fence earlier instances first, so the checkpoints stay as read.
    sinks.claim().map_err(sink_error)?;
    let checkpoints = sinks.checkpoints().map_err(sink_error)?;
    run_graph(
        logs,
        checkpoints,
        workers,
        epoch_records,
        config,
        move |outputs, positions, plan, ctx, probe| {
            sinks.attach(outputs, positions, plan, ctx, probe)
        },
    )
}

/// The graph over the in-memory `logs` (read until drained, resuming from `checkpoints`),
/// its outputs handed to `attach` on every worker.
fn run_graph<L, A>(
    logs: &[L],
    checkpoints: Vec<Option<alluvium_engine::Checkpoint>>,
    workers: usize,
    epoch_records: usize,
    config: &PipelineConfig,
    attach: A,
) -> Result<(), EngineError>
where
    L: ReplayLog<Record = KafkaRecord>,
    A: for<'s> Fn(
            crate::graph::Outputs<'s>,
            timely::dataflow::StreamVec<'s, alluvium_engine::Epoch, alluvium_engine::PositionUpdate>,
            &ResumePlan,
            &alluvium_engine::WorkerContext,
            &ProbeHandle<alluvium_engine::Epoch>,
        ) -> Result<(), String>
        + Send
        + Sync
        + 'static,
{
    let plan = ResumePlan::from_checkpoints(checkpoints, Rehydration::FromStart)?;
    let options = SourceOptions {
        epochs: EpochPolicy {
            max_records: epoch_records.max(1),
            max_duration: std::time::Duration::from_secs(3600),
            max_inflight_epochs: 4,
        },
        mode: RunMode::UntilIdle { idle_timeout: None },
        batch: epoch_records.clamp(64, 64 * 1024),
    };
    let logs = logs.to_vec();
    let config = config.clone();
    execute(&ClusterConfig::single(workers), move |worker, ctx| {
        let probe = ProbeHandle::new();
        worker.dataflow(|scope| {
            let mut records = Vec::new();
            let mut positions = Vec::new();
            for log in &logs {
                let (r, p) = partitioned_source(
                    scope,
                    log.topic(),
                    ctx,
                    &options,
                    &plan,
                    Some(probe.clone()),
                    |src| Ok(log.reader(src.worker.index, src.worker.peers, &plan)),
                );
                records.push(r);
                positions.push(p);
            }
            let records = differential_dataflow::collection::concatenate(scope, records);
            let positions =
                timely::dataflow::operators::Concatenate::concatenate(&scope, positions);
            let outputs = medallion(records, &config, ctx);
            attach(outputs, positions, &plan, ctx, &probe)
        })
    })?;
    Ok(())
}
