//! The Kafka source: a [`PartitionReader`] over rdkafka.
//!
//! Every worker builds its own consumer and assigns itself its share of the partitions of all
//! topics (the sorted list `(topic, partition)` dealt round-robin over all workers of all
//! processes). Each assigned partition gets its own rdkafka queue whose "non-empty" callback
//! wakes the source operator, so an idle source costs nothing. Where reading starts comes
//! from the engine's [`ResumePlan`], never from Kafka's committed offsets.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alluvium_engine::epoch::now_micros;
use alluvium_engine::source::{
    owned_by, partitioned_source, PartitionReader, ReadStatus, SourceOptions,
};
use alluvium_engine::{Epoch, PartitionId, PositionUpdate, ResumePlan, RunMode, WorkerContext};
use differential_dataflow::collection::VecCollection;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, StreamVec};

use super::config::KafkaConfig;
use super::error::KafkaConnectorError;
use super::record::{KafkaRecord, SOURCE_HEADER};

/// How often an idle reader polls the consumer's main queue (errors, statistics) even without
/// a wake-up.
const IDLE_RECHECK: Duration = Duration::from_millis(500);

/// How long a reader must look drained before it reports exhaustion. Guards against a fetch
/// in flight at the moment the end offset (possibly stale, see `drained`) was reached: long
/// enough for a fetch round trip on a loaded machine.
const DRAIN_QUIET: Duration = Duration::from_millis(600);

/// How long an until-idle reader waits for records a checkpoint says exist before it fails.
const MISSING_RECORDS_AFTER: Duration = Duration::from_secs(30);

/// Reads the partitions of `topics` owned by one worker.
pub struct KafkaReader {
    consumer: Arc<BaseConsumer>,
    ids: Vec<PartitionId>,
    topics: Vec<Arc<str>>,
    queues: Vec<
        rdkafka::consumer::base_consumer::PartitionQueue<rdkafka::consumer::DefaultConsumerContext>,
    >,
    /// End offsets as of start (only in until-idle mode).
    ends: Option<Vec<i64>>,
    next: Vec<Option<i64>>,
    turn: usize,
    /// Since when the reader has looked drained without interruption.
    drained_since: Option<Instant>,
    /// The last origin header seen: ingest processes tag whole streams with one value, so
    /// records share one allocation.
    last_origin: Option<Arc<str>>,
    /// Next offset per partition, shared with the lag watcher thread.
    lag_positions: Arc<Vec<AtomicI64>>,
    /// Tells the lag watcher to stop.
    lag_stop: Arc<AtomicBool>,
    /// End offsets the brokers reported at start (`ends` may be raised to checkpoints).
    broker_ends: Vec<i64>,
    /// Since when an until-idle reader has read nothing without being drained.
    waiting_since: Option<Instant>,
    /// Per partition: whether the consumer rewound and is being sought forward again.
    rewound: Vec<bool>,
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        self.lag_stop.store(true, Ordering::Relaxed);
    }
}

/// How often the lag watcher asks the brokers for end offsets.
const LAG_INTERVAL: Duration = Duration::from_secs(2);

/// Sets `alluvium_source_lag` for `ids` every [`LAG_INTERVAL`] from the brokers' high
/// watermarks and the reader's positions, on a thread of its own with its own client, so the
/// dataflow worker never waits for these requests. (rdkafka 0.39's consumer drops
/// librdkafka's statistics events, which would carry the same numbers.)
fn watch_lag(
    config: KafkaConfig,
    ids: Vec<PartitionId>,
    positions: Arc<Vec<AtomicI64>>,
    stop: Arc<AtomicBool>,
) {
    let consumer: BaseConsumer = match config.client_config().create() {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "no lag metric: creating a Kafka client"),
    };
    let gauges: Vec<_> = ids
        .iter()
        .map(|p| {
            let labels = alluvium_engine::metrics::PartitionLabels {
                topic: p.topic.clone(),
                partition: p.partition,
            };
            alluvium_engine::metrics::engine_metrics()
                .source_lag
                .get_or_create(&labels)
                .clone()
        })
        .collect();
    let mut last = Instant::now() - LAG_INTERVAL;
    while !stop.load(Ordering::Relaxed) {
        if last.elapsed() >= LAG_INTERVAL {
            last = Instant::now();
            for (i, id) in ids.iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok((_, high)) =
                    consumer.fetch_watermarks(&id.topic, id.partition, Duration::from_secs(2))
                else {
                    continue;
                };
                let next = positions[i].load(Ordering::Relaxed);
                // A broker whose watermark lags behind what it served gives 0, not < 0.
                gauges[i].set((high - next).max(0));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The message's [`SOURCE_HEADER`] value (UTF-8), shared with the previous record's when equal.
fn origin_of<M: Message>(m: &M, last: &mut Option<Arc<str>>) -> Option<Arc<str>> {
    let headers = m.headers()?;
    let value = headers
        .iter()
        .find(|h| h.key == SOURCE_HEADER)
        .and_then(|h| h.value)?;
    let value = std::str::from_utf8(value).ok()?;
    match last {
        Some(prev) if **prev == *value => Some(prev.clone()),
        _ => {
            let fresh: Arc<str> = Arc::from(value);
            *last = Some(fresh.clone());
            Some(fresh)
        }
    }
}

impl KafkaReader {
    /// Connects, finds the partitions of `topics`, and assigns this worker's share, starting
    /// where `plan` says. `wake` is called from rdkafka's threads when data arrives.
    pub fn new(
        config: &KafkaConfig,
        topics: &[String],
        worker: usize,
        peers: usize,
        plan: &ResumePlan,
        mode: &RunMode,
        wake: impl Fn() + Send + Sync + Clone + 'static,
    ) -> Result<Self, KafkaConnectorError> {
        config.validate()?;
        if topics.is_empty() {
            return Err(KafkaConnectorError::Config {
                key: "source.topics".into(),
                reason: "no topic given".into(),
            });
        }
        let mut client = config.consumer_config();
        client
            .set("group.id", "alluvium-engine")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer =
            client
                .create()
                .map_err(|source| KafkaConnectorError::Client {
                    context: "creating the Kafka consumer".into(),
                    source,
                })?;

        // All partitions of all topics, in a fixed order every worker agrees on.
        let mut all: Vec<PartitionId> = Vec::new();
        for topic in topics {
            let metadata = config
                .with_retries(&format!("fetching metadata of topic {topic}"), || {
                    consumer.fetch_metadata(Some(topic), config.request_timeout)
                })?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(KafkaConnectorError::MissingTopic {
                    topic: topic.clone(),
                    brokers: config.brokers.clone(),
                });
            }
            let mut partitions = partitions;
            partitions.sort_unstable();
            all.extend(
                partitions
                    .into_iter()
                    .map(|p| PartitionId::new(topic.clone(), p)),
            );
        }
        let ids: Vec<PartitionId> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| owned_by(*i, worker, peers))
            .map(|(_, p)| p)
            .collect();

        // End offsets: needed to stop in until-idle mode and to refuse checkpoints beyond them.
        let mut ends = Vec::with_capacity(ids.len());
        let mut broker_ends = Vec::with_capacity(ids.len());
        for id in &ids {
            let (_low, high) = config
                .with_retries(&format!("fetching end offsets of {id}"), || {
                    consumer.fetch_watermarks(&id.topic, id.partition, config.request_timeout)
                })?;
            let committed = plan
                .boundaries()
                .iter()
                .chain(plan.start())
                .filter_map(|c| c.positions.get(id))
                .max();
            let end = match committed.filter(|c| *c > high) {
                Some(committed) => {
                    // Either the broker reports a stale end offset (tansu reports the base
                    // offset of the last batch), or the topic was recreated or truncated. A
                    // committed position is a lower bound of the end either way: the records
                    // below it were read once, so an until-idle run must read them again
                    // before it may stop (otherwise its replay would be cut short).
                    tracing::debug!(
                        "{}",
                        KafkaConnectorError::CheckpointAhead {
                            partition: id.to_string(),
                            committed,
                            end: high,
                        }
                    );
                    committed
                }
                None => high,
            };
            ends.push(end);
            broker_ends.push(high);
        }

        let mut consumer = consumer;
        let w = wake.clone();
        consumer.set_nonempty_callback(w);
        let consumer = Arc::new(consumer);
        // Split every partition's queue off BEFORE assigning: messages fetched between an
        // assignment and the split land on the consumer's main queue, where this reader would
        // never see them — a record silently skipped in one run and read in the next, i.e.
        // a replay that disagrees with what was committed.
        let mut queues = Vec::with_capacity(ids.len());
        for id in &ids {
            let mut q = consumer
                .split_partition_queue(&id.topic, id.partition)
                .ok_or_else(|| KafkaConnectorError::Config {
                    key: "source.topics".into(),
                    reason: format!("could not open a queue for {id}"),
                })?;
            let w = wake.clone();
            q.set_nonempty_callback(w);
            queues.push(q);
        }
        let mut tpl = TopicPartitionList::new();
        for id in &ids {
            let offset = match plan.start_offset(id) {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(&id.topic, id.partition, offset)
                .map_err(|source| KafkaConnectorError::Client {
                    context: format!("assigning {id}"),
                    source,
                })?;
        }
        consumer
            .assign(&tpl)
            .map_err(|source| KafkaConnectorError::Client {
                context: "assigning partitions".into(),
                source,
            })?;
        let topics: Vec<Arc<str>> = ids.iter().map(|p| Arc::from(p.topic.as_str())).collect();
        let lag_positions: Arc<Vec<AtomicI64>> = Arc::new(
            ids.iter()
                .map(|p| AtomicI64::new(plan.start_offset(p).unwrap_or(0)))
                .collect(),
        );
        let lag_stop = Arc::new(AtomicBool::new(false));
        {
            let (config, ids, positions, stop) = (
                config.clone(),
                ids.clone(),
                lag_positions.clone(),
                lag_stop.clone(),
            );
            if let Err(e) = std::thread::Builder::new()
                .name(format!("kafka lag {worker}"))
                .spawn(move || watch_lag(config, ids, positions, stop))
            {
                tracing::warn!(error = %e, "no lag metric: starting its thread");
            }
        }
        let next = ids.iter().map(|p| plan.start_offset(p)).collect();
        let partition_count = ids.len();
        tracing::info!(worker, partitions = %ids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","), "Kafka source assigned");
        Ok(KafkaReader {
            consumer,
            ids,
            topics,
            queues,
            ends: matches!(mode, RunMode::UntilIdle { .. }).then_some(ends),
            next,
            turn: 0,
            drained_since: None,
            last_origin: None,
            lag_positions,
            lag_stop,
            rewound: vec![false; partition_count],
            broker_ends,
            waiting_since: None,
        })
    }

    /// Drops a record below the partition's next offset and seeks the consumer back to where
    /// it was (once per rewind), so it does not read the whole partition again.
    fn skip_rewound(&mut self, i: usize, offset: i64) {
        if self.rewound[i] {
            return;
        }
        self.rewound[i] = true;
        let Some(next) = self.next[i] else { return };
        let id = &self.ids[i];
        tracing::warn!(partition = %id, offset, next, "the Kafka consumer rewound; skipping records already read");
        if let Err(e) = self.consumer.seek(
            &id.topic,
            id.partition,
            Offset::Offset(next),
            Duration::ZERO,
        ) {
            tracing::warn!(partition = %id, error = %e, "seeking past records already read failed; skipping them instead");
        }
    }

    /// Whether every partition reached its end offset as of start. Only called when no
    /// partition queue had a message, so a broker whose end offsets lag (reporting the start of
    /// the last batch) still gets its last batch read.
    fn drained(&self) -> bool {
        let Some(ends) = &self.ends else { return false };
        let positions = self.consumer.position().ok();
        ends.iter().enumerate().all(|(i, &end)| {
            if self.next[i].is_some_and(|n| n >= end) || end == 0 {
                return true;
            }
            // The fetch position moves past offsets without messages (transaction markers).
            let id = &self.ids[i];
            positions
                .as_ref()
                .and_then(|tpl| tpl.find_partition(&id.topic, id.partition))
                .and_then(|p| p.offset().to_raw())
                .is_some_and(|o| o >= end)
        })
    }
}

impl PartitionReader for KafkaReader {
    type Record = KafkaRecord;

    fn partitions(&self) -> &[PartitionId] {
        &self.ids
    }

    fn read(
        &mut self,
        budget: usize,
        emit: &mut dyn FnMut(usize, i64, KafkaRecord),
    ) -> Result<ReadStatus, String> {
        // Serve the main queue: errors and events (no messages arrive there).
        match self.consumer.poll(Duration::ZERO) {
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Kafka consumer error (librdkafka retries by itself)")
            }
            // Cannot happen with the queues split before assignment; emitting it here could
            // reorder the partition, so fail loudly instead of losing it silently.
            Some(Ok(m)) => {
                return Err(format!(
                    "a message of {}[{}] at offset {} arrived on the consumer's main queue",
                    m.topic(),
                    m.partition(),
                    m.offset()
                ))
            }
            None => {}
        }
        let n = self.queues.len();
        if n == 0 {
            return Ok(if self.ends.is_some() {
                ReadStatus::Exhausted
            } else {
                ReadStatus::Idle {
                    recheck: Some(IDLE_RECHECK),
                }
            });
        }
        let mut left = budget;
        let mut empty = 0;
        let ingested_at = now_micros();
        while left > 0 && empty < n {
            let i = self.turn % n;
            self.turn = self.turn.wrapping_add(1);
            let mut got = false;
            // A few messages per partition per turn keeps partitions fair.
            for _ in 0..left.min(256) {
                match self.queues[i].poll(Duration::ZERO) {
                    None => break,
                    Some(Err(e)) => {
                        tracing::warn!(partition = %self.ids[i], error = %e, "Kafka fetch error (retried by librdkafka)");
                        break;
                    }
                    Some(Ok(m)) => {
                        got = true;
                        let offset = m.offset();
                        if self.next[i].is_some_and(|n| offset < n) {
                            // Offsets only grow within a partition, so this record was
                            // already emitted: the consumer rewound (an offset reset after a
                            // broker reported a stale end offset). Emitting it again would
                            // count it twice and make a replay disagree with what the sinks
                            // committed.
                            self.skip_rewound(i, offset);
                            continue;
                        }
                        self.rewound[i] = false;
                        left -= 1;
                        self.next[i] = Some(offset + 1);
                        self.lag_positions[i].store(offset + 1, Ordering::Relaxed);
                        emit(
                            i,
                            offset,
                            KafkaRecord {
                                topic: self.topics[i].clone(),
                                partition: m.partition(),
                                offset,
                                key: m.key().map(<[u8]>::to_vec),
                                payload: m.payload().map(<[u8]>::to_vec),
                                timestamp_ms: m.timestamp().to_millis(),
                                origin: origin_of(&m, &mut self.last_origin),
                                ingested_at,
                            },
                        );
                    }
                }
            }
            if got {
                empty = 0;
            } else {
                empty += 1;
            }
        }
        if left == 0 {
            self.drained_since = None;
            return Ok(ReadStatus::Busy);
        }
        if left < budget {
            self.drained_since = None;
            self.waiting_since = None;
        } else if !self.drained() {
            self.drained_since = None;
            self.check_missing_records()?;
        } else {
            let since = *self.drained_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= DRAIN_QUIET {
                return Ok(ReadStatus::Exhausted);
            }
            return Ok(ReadStatus::Idle {
                recheck: Some(DRAIN_QUIET / 4),
            });
        }
        Ok(ReadStatus::Idle {
            recheck: Some(IDLE_RECHECK),
        })
    }

    fn position(&self, partition: usize) -> Option<i64> {
        self.next.get(partition).copied().flatten()
    }
}

impl KafkaReader {
    /// In until-idle mode, fails when a partition has sat below a checkpoint's position with
    /// nothing to read for [`MISSING_RECORDS_AFTER`]: the records the checkpoint covers are
    /// gone (topic recreated or truncated), and waiting longer would hang the run.
    fn check_missing_records(&mut self) -> Result<(), String> {
        let Some(ends) = &self.ends else {
            return Ok(());
        };
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        if since.elapsed() < MISSING_RECORDS_AFTER {
            return Ok(());
        }
        for (i, &end) in ends.iter().enumerate() {
            let at = self.next[i].unwrap_or(0);
            if at < end && end > self.broker_ends[i] {
                return Err(KafkaConnectorError::CheckpointAhead {
                    partition: self.ids[i].to_string(),
                    committed: end,
                    end: self.broker_ends[i],
                }
                .to_string());
            }
        }
        Ok(())
    }
}

/// Builds a Kafka source reading `topics`: the records, and the positions reached at the end
/// of each epoch (for [`alluvium_engine::commit_sink`]).
#[allow(clippy::too_many_arguments)]
pub fn kafka_source<'s>(
    scope: Scope<'s, Epoch>,
    config: &KafkaConfig,
    topics: &[String],
    ctx: &WorkerContext,
    options: &SourceOptions,
    plan: &ResumePlan,
    committed: Option<ProbeHandle<Epoch>>,
) -> (
    VecCollection<'s, Epoch, KafkaRecord>,
    StreamVec<'s, Epoch, PositionUpdate>,
) {
    let name = format!("Kafka {}", topics.join(","));
    partitioned_source(scope, &name, ctx, options, plan, committed, |src| {
        let activator = Arc::new(src.activator);
        let wake = move || {
            let _ = activator.activate();
        };
        KafkaReader::new(
            config,
            topics,
            src.worker.index,
            src.worker.peers,
            plan,
            &options.mode,
            wake,
        )
        .map_err(|e| e.to_string())
    })
}
