//! Sources: partitioned, replayable logs read into epochs.
//!
//! A source is a [`PartitionReader`] — something that reads records with offsets from a set
//! of partitions (Kafka topics, files, in-memory vectors) — driven by [`partitioned_source`],
//! which does everything that is the same for every log:
//!
//! - stamps records with epochs: replay epochs below the [`ResumePlan`]'s checkpoints, then
//!   live epochs closed by the [`EpochClock`] (size or time);
//! - reports the positions reached at the end of every epoch on a second stream, which the
//!   commit operator stores with the sink's commit;
//! - applies backpressure: stops reading while too many closed epochs are uncommitted;
//! - never busy-loops: when the reader has nothing, the operator sleeps until the reader's
//!   wake-up (an activator handed to it) or the epoch timer;
//! - stops in [`RunMode::UntilIdle`] when the reader is exhausted or idle for long enough.
//!
//! Partitions are spread over all workers of all processes by [`owned_by`]; every worker
//! reads only its own, so no consumer-group rebalancing happens inside the engine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::collection::{AsCollection, VecCollection};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, StreamVec};
use timely::scheduling::SyncActivator;

use crate::epoch::{Epoch, EpochClock, EpochPolicy, RunMode};
use crate::position::{PartitionId, PositionUpdate};
use crate::recorded::LogReader;
use crate::resume::ResumePlan;
use crate::runtime::WorkerContext;

/// What a reader found on one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// More records may be ready right away.
    Busy,
    /// Nothing is ready; the reader wakes the operator through its activator when data
    /// arrives, and asks to be polled again after `recheck` at the latest.
    Idle {
        /// Poll again after this long even without a wake-up.
        recheck: Option<Duration>,
    },
    /// Every partition of this reader reached its end (for [`RunMode::UntilIdle`]: the end
    /// offsets as of start).
    Exhausted,
}

/// Reads records from the partitions assigned to one worker.
pub trait PartitionReader: 'static {
    /// The record type handed to the dataflow.
    type Record: Clone + 'static;

    /// The partitions this reader reads, indexed by position in the slice.
    fn partitions(&self) -> &[PartitionId];

    /// Reads up to `budget` records, calling `emit(partition_index, offset, record)` for each.
    fn read(
        &mut self,
        budget: usize,
        emit: &mut dyn FnMut(usize, i64, Self::Record),
    ) -> Result<ReadStatus, String>;

    /// The next offset the reader will deliver for a partition, when it knows it (lets
    /// positions move past gaps in the offsets, e.g. Kafka transaction markers).
    fn position(&self, _partition: usize) -> Option<i64> {
        None
    }
}

/// Whether worker `worker` of `peers` reads the `i`-th partition of a source's sorted
/// partition list.
pub fn owned_by(i: usize, worker: usize, peers: usize) -> bool {
    i % peers == worker
}

/// What a reader factory gets: the worker it runs on and how to wake the source.
pub struct SourceContext<'a> {
    /// The worker.
    pub worker: &'a WorkerContext,
    /// Wakes the source operator from any thread (e.g. a client library's callback).
    pub activator: SyncActivator,
}

/// Options shared by all sources.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// When epochs close, and the backpressure limit.
    pub epochs: EpochPolicy,
    /// Until when the source runs.
    pub mode: RunMode,
    /// Records read per activation before yielding to other operators.
    pub batch: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            epochs: EpochPolicy::default(),
            mode: RunMode::Continuous,
            batch: 16 * 1024,
        }
    }
}

/// Builds a source operator over the reader made by `make_reader` on every worker.
///
/// Returns the records as a collection of epoch-stamped insertions, and the stream of
/// positions reached at the end of every epoch (for [`crate::commit_sink`]).
/// `committed` is the probe of the pipeline's sinks, used for backpressure.
pub fn partitioned_source<'s, R, F>(
    scope: Scope<'s, Epoch>,
    name: &str,
    ctx: &WorkerContext,
    options: &SourceOptions,
    plan: &ResumePlan,
    committed: Option<ProbeHandle<Epoch>>,
    make_reader: F,
) -> (
    VecCollection<'s, Epoch, R::Record>,
    StreamVec<'s, Epoch, PositionUpdate>,
)
where
    R: PartitionReader,
    F: FnOnce(SourceContext<'_>) -> Result<R, String>,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let info = builder.operator_info();
    let (data_out, data_stream) = builder.new_output::<Vec<(R::Record, Epoch, isize)>>();
    let (pos_out, pos_stream) = builder.new_output::<Vec<PositionUpdate>>();
    let mut data_out = OutputBuilder::from(data_out);
    let mut pos_out = OutputBuilder::from(pos_out);

    let activator = scope.activator_for(info.address.clone());
    crate::merging::register_source(activator.clone());
    let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
    let reader = make_reader(SourceContext {
        worker: ctx,
        activator: sync_activator,
    });
    let ctx = ctx.clone();
    let options = options.clone();
    let plan = plan.clone();
    let source_name = name.to_owned();

    builder.build(move |mut caps| {
        let pos_cap = caps.pop();
        let data_cap = caps.pop();
        let mut state = match (reader, data_cap, pos_cap) {
            (Ok(reader), Some(data_cap), Some(pos_cap)) => {
                Some(Driver::new(reader, data_cap, pos_cap, &plan, &options))
            }
            (Err(e), _, _) => {
                ctx.fail(format!("source {source_name}: {e}"));
                None
            }
            _ => None,
        };
        move |_frontiers| {
            let Some(driver) = state.as_mut() else { return };
            let mut data = data_out.activate();
            let mut pos = pos_out.activate();
            match driver.step(&mut data, &mut pos, committed.as_ref(), &options) {
                Ok(Wake::Now) => activator.activate(),
                Ok(Wake::After(d)) => activator.activate_after(d),
                Ok(Wake::Done) => state = None,
                Err(e) => {
                    ctx.fail(format!("source {source_name}: {e}"));
                    state = None;
                }
            }
        }
    });
    (data_stream.as_collection(), pos_stream)
}

enum Wake {
    Now,
    After(Duration),
    Done,
}

type DataSession<'a, D> = timely::dataflow::operators::generic::OutputBuilderSession<
    'a,
    Epoch,
    timely::container::CapacityContainerBuilder<Vec<(D, Epoch, isize)>>,
>;
type PosSession<'a> = timely::dataflow::operators::generic::OutputBuilderSession<
    'a,
    Epoch,
    timely::container::CapacityContainerBuilder<Vec<PositionUpdate>>,
>;

/// A replay epoch of this reader: its capabilities (until released), the positions that end
/// it, and the records read for it but not yet sent.
struct ReplayEpoch<D> {
    epoch: Epoch,
    caps: Option<(Capability<Epoch>, Capability<Epoch>)>,
    /// `(partition index, end offset)` for the partitions of this reader.
    ends: Vec<(usize, i64)>,
    buffer: Vec<D>,
}

struct Driver<R: PartitionReader> {
    reader: R,
    partitions: Arc<[PartitionId]>,
    replay: Vec<ReplayEpoch<R::Record>>,
    /// Index of the first replay epoch not yet released.
    replay_next: usize,
    /// Per partition: `(end offset, replay index)` in epoch order.
    replay_of: Vec<Vec<(i64, usize)>>,
    data_cap: Capability<Epoch>,
    pos_cap: Capability<Epoch>,
    clock: EpochClock,
    next: Vec<Option<i64>>,
    reported: Vec<Option<i64>>,
    closed: VecDeque<Epoch>,
    live: Vec<R::Record>,
    last_record: Instant,
    /// When the open live epoch began (closed epochs' durations go to the metrics).
    epoch_opened: Instant,
    /// Per partition: its records counter and position gauge (looked up once).
    counters: Vec<(
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::gauge::Gauge,
    )>,
    /// Records read per partition since the counters were last updated.
    unreported: Vec<u64>,
}

impl<R: PartitionReader> Driver<R> {
    fn new(
        reader: R,
        data_cap: Capability<Epoch>,
        pos_cap: Capability<Epoch>,
        plan: &ResumePlan,
        options: &SourceOptions,
    ) -> Self {
        let partitions: Arc<[PartitionId]> = reader.partitions().to_vec().into();
        let mut replay = Vec::new();
        let mut replay_of: Vec<Vec<(i64, usize)>> = vec![Vec::new(); partitions.len()];
        for (k, boundary) in plan.boundaries().iter().enumerate() {
            let ends: Vec<(usize, i64)> = partitions
                .iter()
                .enumerate()
                .filter_map(|(i, p)| boundary.positions.get(p).map(|o| (i, o)))
                .collect();
            for &(i, end) in &ends {
                replay_of[i].push((end, k));
            }
            replay.push(ReplayEpoch {
                epoch: boundary.epoch,
                caps: Some((
                    data_cap.delayed(&boundary.epoch),
                    pos_cap.delayed(&boundary.epoch),
                )),
                ends,
                buffer: Vec::new(),
            });
        }
        let clock = EpochClock::new(options.epochs.clone(), plan.first_live_epoch());
        let mut data_cap = data_cap;
        let mut pos_cap = pos_cap;
        data_cap.downgrade(&clock.current());
        pos_cap.downgrade(&clock.current());
        crate::merging::inputs_sealed_to(clock.current());
        let next: Vec<Option<i64>> = partitions.iter().map(|p| plan.start_offset(p)).collect();
        // Positions already stored by some checkpoint need no second report.
        let reported: Vec<Option<i64>> = partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let replayed = plan
                    .boundaries()
                    .iter()
                    .filter_map(|c| c.positions.get(p))
                    .max();
                next[i].max(replayed)
            })
            .collect();
        let metrics = crate::metrics::engine_metrics();
        let counters = partitions
            .iter()
            .map(|p| {
                let labels = crate::metrics::PartitionLabels {
                    topic: p.topic.clone(),
                    partition: p.partition,
                };
                (
                    metrics.source_records.get_or_create(&labels).clone(),
                    metrics.source_position.get_or_create(&labels).clone(),
                )
            })
            .collect();
        let unreported = vec![0; partitions.len()];
        Driver {
            counters,
            unreported,
            reader,
            partitions,
            replay,
            replay_next: 0,
            replay_of,
            data_cap,
            pos_cap,
            clock,
            reported,
            next,
            closed: VecDeque::new(),
            live: Vec::new(),
            last_record: Instant::now(),
            epoch_opened: Instant::now(),
        }
    }

    fn replaying(&self) -> bool {
        self.replay_next < self.replay.len()
    }

    fn backpressured(&mut self, committed: Option<&ProbeHandle<Epoch>>) -> bool {
        let Some(probe) = committed else { return false };
        while let Some(&oldest) = self.closed.front() {
            if probe.less_equal(&oldest) {
                break;
            }
            self.closed.pop_front();
        }
        self.closed.len() >= self.clock.policy().max_inflight_epochs.max(1)
    }

    fn step(
        &mut self,
        data: &mut DataSession<'_, R::Record>,
        pos: &mut PosSession<'_>,
        committed: Option<&ProbeHandle<Epoch>>,
        options: &SourceOptions,
    ) -> Result<Wake, String> {
        let mut status = ReadStatus::Idle { recheck: None };
        let mut budget = options.batch.max(1);
        let mut paused = false;
        while budget > 0 {
            if self.backpressured(committed) {
                paused = true;
                break;
            }
            // Read no more than the open epoch has room for, so epochs close at their size
            // exactly (replayed records belong to replay epochs and are not bounded).
            let room = if self.replaying() {
                usize::MAX
            } else {
                let max = self.clock.policy().max_records;
                max.saturating_sub(self.clock.records()).max(1)
            };
            let chunk = budget.min(4096).min(room);
            let mut read = 0usize;
            {
                let replay_of = &self.replay_of;
                let next = &mut self.next;
                let live_buf = &mut self.live;
                let replay = &mut self.replay;
                let unreported = &mut self.unreported;
                status = self.reader.read(chunk, &mut |i, offset, record| {
                    read += 1;
                    unreported[i] += 1;
                    next[i] = Some(offset + 1);
                    match replay_of[i].iter().find(|(end, _)| offset < *end) {
                        Some(&(_, k)) => replay[k].buffer.push(record),
                        None => live_buf.push(record),
                    }
                })?;
            }
            if read > 0 {
                self.last_record = Instant::now();
                self.report_metrics();
            }
            self.clock.record(self.live.len());
            self.flush(data);
            self.release_replayed(pos, false);
            if !self.replaying() && self.clock.should_close() {
                self.close_epoch(pos);
            }
            budget = budget.saturating_sub(read.max(chunk));
            if status != ReadStatus::Busy {
                break;
            }
        }
        // An empty epoch also closes as soon as an arrangement waits to merge in idle time:
        // its frontier change is what schedules the arrangements (see `crate::merging`).
        if !self.replaying()
            && (self.clock.should_close()
                || (self.clock.records() == 0 && crate::merging::take_idle_merge_request()))
        {
            self.close_epoch(pos);
        }
        let idle_for = self.last_record.elapsed();
        let done = match (&options.mode, status) {
            (_, ReadStatus::Exhausted) => true,
            (
                RunMode::UntilIdle {
                    idle_timeout: Some(t),
                },
                _,
            ) => idle_for >= *t,
            _ => false,
        };
        if done {
            self.release_replayed(pos, true);
            self.close_epoch(pos);
            return Ok(Wake::Done);
        }
        if paused {
            return Ok(Wake::After(Duration::from_millis(2)));
        }
        let mut wake = self.clock.time_left().max(Duration::from_millis(1));
        match status {
            ReadStatus::Busy => return Ok(Wake::Now),
            ReadStatus::Idle { recheck: Some(d) } => wake = wake.min(d),
            _ => {}
        }
        if let RunMode::UntilIdle {
            idle_timeout: Some(t),
        } = &options.mode
        {
            wake = wake.min(t.saturating_sub(idle_for).max(Duration::from_millis(1)));
        }
        Ok(Wake::After(wake))
    }

    fn flush(&mut self, data: &mut DataSession<'_, R::Record>) {
        if !self.live.is_empty() {
            let t = self.clock.current();
            data.session(&self.data_cap)
                .give_iterator(self.live.drain(..).map(|r| (r, t, 1)));
        }
        for r in &mut self.replay[self.replay_next..] {
            if let (false, Some((cap, _))) = (r.buffer.is_empty(), &r.caps) {
                let t = r.epoch;
                data.session(cap)
                    .give_iterator(r.buffer.drain(..).map(|rec| (rec, t, 1)));
            }
        }
    }

    /// Releases replay epochs whose partitions all passed their end (all of them when the
    /// reader is done), reporting the boundary's positions at that epoch.
    fn release_replayed(&mut self, pos: &mut PosSession<'_>, all: bool) {
        while let Some(r) = self.replay.get_mut(self.replay_next) {
            let next = &self.next;
            let reader = &self.reader;
            let passed = all
                || r.ends.iter().all(|&(i, end)| {
                    let at = next[i].max(reader.position(i));
                    at.is_some_and(|o| o >= end)
                });
            if !passed {
                break;
            }
            if let Some((_data_cap, pos_cap)) = r.caps.take() {
                let parts = &self.partitions;
                pos.session(&pos_cap)
                    .give_iterator(r.ends.iter().map(|&(i, end)| (parts[i].clone(), end)));
            }
            self.replay_next += 1;
        }
    }

    /// Closes the live epoch: reports the positions that moved, then advances the capabilities.
    /// Adds the records read since the last call to the partitions' counters.
    fn report_metrics(&mut self) {
        let all = crate::metrics::engine_metrics();
        for (i, n) in self.unreported.iter_mut().enumerate() {
            if *n > 0 {
                all.records_read.inc_by(*n);
                if let Some((records, position)) = self.counters.get(i) {
                    records.inc_by(*n);
                    if let Some(next) = self.next[i] {
                        position.set(next);
                    }
                }
                *n = 0;
            }
        }
    }

    fn close_epoch(&mut self, pos: &mut PosSession<'_>) {
        let metrics = crate::metrics::engine_metrics();
        metrics.epochs_closed.inc();
        let open = self.epoch_opened.elapsed();
        metrics.epoch_seconds.observe(open.as_secs_f64());
        metrics
            .epoch_quantiles
            .record(&crate::metrics::NoLabels {}, open);
        self.epoch_opened = Instant::now();
        let mut session = pos.session(&self.pos_cap);
        for i in 0..self.partitions.len() {
            let at = self.next[i].max(self.reader.position(i));
            if let (Some(o), true) = (at, at != self.reported[i]) {
                session.give((self.partitions[i].clone(), o));
                self.reported[i] = at;
            }
        }
        drop(session);
        let carried_records = self.clock.records() > 0;
        let closed = self.clock.advance();
        self.closed.push_back(closed);
        let now = self.clock.current();
        self.data_cap.downgrade(&now);
        self.pos_cap.downgrade(&now);
        if carried_records {
            crate::merging::inputs_sealed_to(now);
        }
    }
}

/// An in-memory partitioned log, the simplest [`PartitionReader`]: used by tests, benches and
/// examples, and the reference for what a source must do.
#[derive(Clone, Debug)]
pub struct MemoryLog<D> {
    /// Topic name of the partitions.
    pub topic: String,
    /// The records of each partition; a record's offset is its index.
    pub partitions: Vec<Arc<Vec<D>>>,
}

impl<D: Clone + 'static> MemoryLog<D> {
    /// A reader of the partitions owned by `worker` of `peers`, starting at the plan's offsets.
    pub fn reader(&self, worker: usize, peers: usize, plan: &ResumePlan) -> MemoryReader<D> {
        LogReader::new(&self.topic, &self.partitions, worker, peers, plan)
    }
}

/// Reads the owned partitions of a [`MemoryLog`], round-robin.
pub type MemoryReader<D> = LogReader<Arc<Vec<D>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merging::{
        defer_a_merge_for_test, reset_worker, take_idle_merge_request, track_arrivals,
    };
    use timely::dataflow::operators::Probe;

    /// One partition of `records`, then idle for good (a live topic with no new messages).
    struct LiveReader {
        partitions: Vec<PartitionId>,
        records: Vec<u64>,
        next: usize,
    }

    impl PartitionReader for LiveReader {
        type Record = u64;

        fn partitions(&self) -> &[PartitionId] {
            &self.partitions
        }

        fn read(
            &mut self,
            budget: usize,
            emit: &mut dyn FnMut(usize, i64, u64),
        ) -> Result<ReadStatus, String> {
            let end = self.records.len().min(self.next + budget);
            for (offset, record) in self.records[self.next..end].iter().enumerate() {
                emit(0, (self.next + offset) as i64, *record);
            }
            self.next = end;
            Ok(if self.next < self.records.len() {
                ReadStatus::Busy
            } else {
                ReadStatus::Idle { recheck: None }
            })
        }
    }

    /// A source whose open epoch has no records closes it when an arrangement deferred a
    /// merge (and no epoch is in flight), and only then: that frontier change is what
    /// schedules the arrangements for their idle merging (`crate::merging`).
    #[test]
    fn an_empty_epoch_closes_when_a_merge_waits_for_idle_time() {
        timely::execute(timely::Config::thread(), |worker| {
            reset_worker();
            let ctx = WorkerContext::new(0, 1);
            // Epochs close after 10 records or an hour: the first one by size, the next,
            // empty one never by itself within this test.
            let options = SourceOptions {
                epochs: EpochPolicy {
                    max_records: 10,
                    max_duration: Duration::from_secs(3_600),
                    max_inflight_epochs: 8,
                },
                mode: RunMode::Continuous,
                batch: 64,
            };
            let plan = ResumePlan::fresh();
            let probe = ProbeHandle::new();
            let dataflow = worker.next_dataflow_index();
            worker.dataflow::<Epoch, _, _>(|scope| {
                let (records, _positions) =
                    partitioned_source(scope, "live", &ctx, &options, &plan, None, |_| {
                        Ok(LiveReader {
                            partitions: vec![PartitionId::new("t", 0)],
                            records: (0..10).collect(),
                            next: 0,
                        })
                    });
                track_arrivals(records.inner).probe_with(&probe);
            });
            let frontier = |probe: &ProbeHandle<Epoch>| {
                probe.with_frontier(|f| f.first().copied().unwrap_or(Epoch::MAX))
            };
            let step_until = |worker: &mut timely::worker::Worker, done: &dyn Fn() -> bool| {
                let started = Instant::now();
                while !done() && started.elapsed() < Duration::from_secs(10) {
                    worker.step_or_park(Some(Duration::from_millis(5)));
                }
            };
            // The ten records fill the first epoch, which closes and arrives.
            step_until(worker, &|| frontier(&probe) > 0);
            let after_records = frontier(&probe);
            assert!(after_records > 0, "the full epoch did not close");
            // Nothing asks for idle time: the empty epoch stays open.
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(200) {
                worker.step_or_park(Some(Duration::from_millis(5)));
            }
            assert_eq!(
                frontier(&probe),
                after_records,
                "an empty epoch closed unasked"
            );
            // A deferred merge asks: the source closes the empty epoch and takes the request.
            assert!(
                !crate::merging::epoch_in_flight(),
                "the first epoch is in flight"
            );
            defer_a_merge_for_test();
            step_until(worker, &|| frontier(&probe) > after_records);
            assert!(
                frontier(&probe) > after_records,
                "the empty epoch did not close for the deferred merge"
            );
            assert!(!take_idle_merge_request(), "the source took the request");
            // The source never ends by itself: drop the dataflow for the worker to finish.
            worker.drop_dataflow(dataflow);
            reset_worker();
        })
        .expect("execute");
    }
}
