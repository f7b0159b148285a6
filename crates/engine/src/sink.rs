//! Sinks and the frontier-driven, exactly-once commit protocol.
//!
//! A sink has two halves:
//!
//! - a [`SinkWriter`] on every worker, which receives the consolidated changes `(row, diff)`
//!   of each epoch for the rows routed to that worker and *stages* them (writes a data file,
//!   buffers them, ...), returning a small, serialisable description of what it staged;
//! - one [`SinkCommitter`], on worker 0, which receives the staged pieces of every worker and
//!   commits them atomically together with the source [`Positions`] the epoch covers.
//!
//! The operator built by [`commit_sink`] commits epoch `e` only when the frontiers of both
//! the staged pieces and the source positions have passed `e`, i.e. when no worker can still
//! produce data or positions for it. Epochs are committed in order, each at most once: the
//! committer skips epochs at or below the sink's last [`Checkpoint`] (they are replay epochs,
//! see [`crate::resume`]).
//!
//! The returned probe advances past `e` only after `e` is committed, so sources use it for
//! backpressure and the runtime for "everything is committed".

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use differential_dataflow::collection::VecCollection;
use differential_dataflow::hashable::Hashable;
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Capability, Probe};

use timely::dataflow::StreamVec;

use crate::epoch::Epoch;
use crate::position::{Checkpoint, PositionUpdate, Positions};
use crate::resume::ResumePlan;
use crate::runtime::WorkerContext;

/// An error of a sink. Transient errors are retried with backoff by the commit operator.
#[derive(Debug, Error)]
pub enum SinkError {
    /// An I/O operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (e.g. "writing /data/state.json").
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A failure that may go away when retried (a network hiccup, a lost race).
    #[error("transient sink failure: {0}")]
    Transient(String),
    /// A failure that retrying will not fix.
    #[error("{0}")]
    Fatal(String),
}

impl SinkError {
    /// Whether retrying the operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_))
    }
}

/// The per-worker half of a sink: stages one epoch's changes of this worker's rows.
pub trait SinkWriter<D>: 'static {
    /// What a staged piece looks like to the committer (file paths, row counts, or the rows).
    type Staged: Serialize + DeserializeOwned + Send + 'static;

    /// Stages the changes of `epoch` held by this worker: consolidated, or, for an insert-only
    /// collection given through [`appended_epochs`], the rows as they came. Returns `None`
    /// when nothing needs committing from this worker.
    fn stage(
        &mut self,
        epoch: Epoch,
        updates: &[(D, isize)],
    ) -> Result<Option<Self::Staged>, SinkError>;
}

/// The single committer of a sink, on worker 0.
pub trait SinkCommitter: 'static {
    /// The staged pieces it commits.
    type Staged;

    /// Atomically commits `epoch`: the staged pieces of all workers and the source positions
    /// reached at the end of `epoch`. After it returns `Ok`, the sink's checkpoint is `epoch`.
    fn commit(
        &mut self,
        epoch: Epoch,
        staged: &[Self::Staged],
        positions: &Positions,
    ) -> Result<(), SinkError>;

    /// How many consecutive epochs this committer takes at once when it has fallen behind
    /// (1, the default: never grouped). A committer whose commit has a fixed cost (files,
    /// snapshots, round trips) catches up by committing the waiting epochs together.
    fn max_group(&self) -> usize {
        1
    }

    /// The least time between the starts of two commits (`None`, the default: commit each
    /// epoch as soon as it is complete). With an interval, epochs that complete sooner wait
    /// and commit together as one group (up to [`SinkCommitter::max_group`] epochs, which
    /// commit at once when reached): fewer, larger commits for a sink whose every commit
    /// costs (snapshots, files), while other sinks keep committing each epoch. Epochs held
    /// back count as uncommitted for the sources' backpressure.
    fn commit_interval(&self) -> Option<Duration> {
        None
    }

    /// Atomically commits consecutive epochs, oldest first, as one: afterwards the sink's
    /// checkpoint is the last of them, with its positions, and the epochs before it are never
    /// visible on their own. Called only with up to [`SinkCommitter::max_group`] epochs, and
    /// retried on transient errors, so it must skip what an earlier attempt committed. The
    /// default commits them one by one.
    fn commit_group(&mut self, group: &[EpochToCommit<Self::Staged>]) -> Result<(), SinkError> {
        for (epoch, staged, positions) in group {
            self.commit(*epoch, staged, positions)?;
        }
        Ok(())
    }
}

/// One epoch waiting for its commit: the epoch, the staged pieces of every worker, and the
/// source positions at its end.
pub type EpochToCommit<P> = (Epoch, Vec<P>, Positions);

/// A sink: a cloneable description from which every worker builds its writer, and worker 0
/// its committer.
pub trait Sink<D>: Clone + Send + Sync + 'static {
    /// What writers hand to the committer.
    type Staged: Serialize + DeserializeOwned + Send + 'static;
    /// The per-worker writer.
    type Writer: SinkWriter<D, Staged = Self::Staged>;
    /// The committer.
    /// The committer; it runs on a thread of its own (so it must be `Send`), and commits
    /// while the dataflow computes the next epochs.
    type Committer: SinkCommitter<Staged = Self::Staged> + Send;

    /// A short name for logs and errors.
    fn name(&self) -> String;
    /// Claims the sink's durable state for this run, so that every commit of an earlier
    /// instance of the pipeline fails from now on (a fencing token). Call it once per run,
    /// on the process of worker 0, *before* reading the checkpoints the run's
    /// [`ResumePlan`] is built from: then the plan's checkpoints cannot move under it. The
    /// default does nothing (a sink whose commits are fenced otherwise).
    fn claim(&self) -> Result<(), SinkError> {
        Ok(())
    }
    /// The last committed epoch and its positions, read from the sink's durable state.
    fn checkpoint(&self) -> Result<Option<Checkpoint>, SinkError>;
    /// Builds the writer of global worker `worker`.
    fn writer(&self, worker: usize) -> Result<Self::Writer, SinkError>;
    /// Builds the committer (called on worker 0 only).
    fn committer(&self) -> Result<Self::Committer, SinkError>;
}

/// How often and how long the committer retries a transient failure.
const COMMIT_RETRIES: u32 = 8;
const COMMIT_BACKOFF: Duration = Duration::from_millis(100);

/// Retries `op` on transient errors with exponential backoff, logging each retry.
pub fn retry_transient<T>(
    what: &str,
    mut op: impl FnMut() -> Result<T, SinkError>,
) -> Result<T, SinkError> {
    let mut delay = COMMIT_BACKOFF;
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if e.is_transient() && attempt < COMMIT_RETRIES => {
                attempt += 1;
                tracing::warn!(%e, attempt, ?delay, "{what} failed, retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// Sums the diffs of equal rows and drops rows whose diff is zero. Sinks do not care about
/// the order of rows, only about their net changes, so rows are brought together by their
/// hash, not by their order: sorting whole rows (long strings with common prefixes, wide
/// structs) compared and moved them O(n log n) times and took a fifth of the pipeline's time
/// (perf); here each row is hashed once and moved about twice, and whole rows are compared
/// only within a run of equal hashes (the same row, or a rare collision).
pub fn consolidate_unstable<D: Ord + Hashable<Output: Into<u64>>>(updates: &mut Vec<(D, isize)>) {
    if updates.len() > 1 {
        let mut keyed: Vec<(u64, (D, isize))> = updates
            .drain(..)
            .map(|u| (u.0.hashed().into(), u))
            .collect();
        keyed.sort_unstable_by_key(|(h, _)| *h);
        let mut start = 0;
        while start < keyed.len() {
            let h = keyed[start].0;
            let end = start + keyed[start..].iter().take_while(|k| k.0 == h).count();
            // Different rows with one hash may interleave: order the run so equal rows meet.
            if end - start > 2 || (end - start == 2 && keyed[start].1 .0 != keyed[start + 1].1 .0) {
                keyed[start..end].sort_unstable_by(|a, b| a.1 .0.cmp(&b.1 .0));
            }
            start = end;
        }
        updates.extend(keyed.into_iter().map(|(_, u)| u));
    }
    let mut write = 0;
    for read in 0..updates.len() {
        if write > 0 && updates[write - 1].0 == updates[read].0 {
            updates[write - 1].1 += updates[read].1;
        } else {
            updates.swap(write, read);
            write += 1;
        }
    }
    updates.truncate(write);
    updates.retain(|(_, d)| *d != 0);
}

/// One worker's changes of each complete epoch (the frontier has passed it), shared by every
/// sink that takes them: built once by [`consolidate_epochs`] (or [`appended_epochs`]) and
/// given to any number of [`commit_changes`]. Epochs without changes are not sent.
pub type EpochChanges<'s, D> = StreamVec<'s, Epoch, (Epoch, Rc<Vec<(D, isize)>>)>;

/// An epoch's buffered changes; consolidated (when asked) whenever they reach `next`, so
/// that churn within a long epoch (+row, -row, ...) does not pile up.
struct EpochBuffer<D> {
    cap: Capability<Epoch>,
    updates: Vec<(D, isize)>,
    /// The length at which the buffer is consolidated next.
    next: usize,
}

/// The least buffer worth consolidating before its epoch ends.
const CONSOLIDATE_AT_LEAST: usize = 1 << 16;

impl<D: Ord + Hashable<Output: Into<u64>>> EpochBuffer<D> {
    /// Consolidates the buffer early, and sets when to do it next: when it has doubled if
    /// this time cancelled changes, but only when it is eight times larger if it cancelled
    /// almost nothing (a bulk epoch of inserts: consolidating it as it grows re-hashes and
    /// re-sorts every row again and again, for nothing but the final pass; measured +2–7 %
    /// order events/s in memory).
    fn consolidate_early(&mut self) {
        let before = self.updates.len();
        consolidate_unstable(&mut self.updates);
        let after = self.updates.len();
        let growth = if after * 10 > before * 9 { 8 } else { 2 };
        self.next = (growth * after).max(CONSOLIDATE_AT_LEAST);
    }
}

/// Buffers `collection` per epoch on each worker (moved there by `pact`) and sends each epoch's
/// changes on once the frontier has passed it, `consolidate`d when asked.
fn collect_epochs<'s, D, P>(
    collection: VecCollection<'s, Epoch, D>,
    pact: P,
    name: &str,
    consolidate: bool,
    ctx: &WorkerContext,
) -> EpochChanges<'s, D>
where
    D: timely::ExchangeData + Hashable<Output: Into<u64>> + Ord + Clone,
    P: timely::dataflow::channels::pact::ParallelizationContract<Epoch, Vec<(D, Epoch, isize)>>,
{
    let ctx = ctx.clone();
    // The sinks are where this worker's data arrives last: an epoch is in flight (and
    // arrangements defer their idle merging) until it gets here.
    crate::merging::track_arrivals(collection.inner).unary_frontier(
        pact,
        name,
        move |_cap, _info| {
            let mut pending: BTreeMap<Epoch, EpochBuffer<D>> = BTreeMap::new();
            // In a multi-process cluster, capabilities of epochs this worker failed to
            // stage are never released: with them dropped, the epoch would look complete
            // to the committer on another process (before this one stops) and commit
            // without this worker's changes. In one process every worker stops at once.
            let mut failed_epochs: Vec<Capability<Epoch>> = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        let mut rows = batch.drain(..).peekable();
                        while let Some((row, time, diff)) = rows.next() {
                            let buffer = pending.entry(time).or_insert_with(|| EpochBuffer {
                                cap: cap.delayed(&time, 0),
                                updates: Vec::new(),
                                next: CONSOLIDATE_AT_LEAST,
                            });
                            buffer.updates.push((row, diff));
                            // Records of a batch mostly share one time: append them in one go.
                            while let Some((row, _, diff)) = rows.next_if(|(_, t, _)| *t == time) {
                                buffer.updates.push((row, diff));
                            }
                            if consolidate && buffer.updates.len() > buffer.next {
                                buffer.consolidate_early();
                            }
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    let epoch = *entry.key();
                    if frontier.less_equal(&epoch) {
                        break;
                    }
                    let EpochBuffer {
                        cap, mut updates, ..
                    } = entry.remove();
                    if ctx.failed() {
                        if ctx.is_multi_process() {
                            failed_epochs.push(cap);
                        }
                        continue;
                    }
                    if consolidate {
                        consolidate_unstable(&mut updates);
                    }
                    if !updates.is_empty() {
                        output.session(&cap).give((epoch, Rc::new(updates)));
                    }
                }
            }
        },
    )
}

/// Each complete epoch's net changes on this worker, for [`commit_changes`]: every row is
/// routed by its hash, so that all changes of a row meet on one worker (a collection
/// assembled by `concat`, e.g. a left join, may hold a row's +1 and -1 on different workers),
/// and consolidated there, once for all the sinks that take the result.
pub fn consolidate_epochs<'s, D>(
    collection: VecCollection<'s, Epoch, D>,
    name: &str,
    ctx: &WorkerContext,
) -> EpochChanges<'s, D>
where
    D: timely::ExchangeData + Hashable<Output: Into<u64>> + Ord + Clone,
{
    collect_epochs(
        collection,
        Exchange::new(|(row, _, _): &(D, Epoch, isize)| row.hashed().into()),
        &format!("Consolidate {name}"),
        true,
        ctx,
    )
}

/// Each complete epoch's rows of an insert-only collection (every diff positive: bronze
/// records, a quarantine) for [`commit_changes`] into append-only tables: the rows stay on
/// the worker that made them, as they came, neither moved nor consolidated (a row twice is
/// a row written twice, as its consolidated diff of 2 would be). A retraction reaches the
/// writer unconsolidated, and an append-only writer refuses it.
pub fn appended_epochs<'s, D>(
    collection: VecCollection<'s, Epoch, D>,
    name: &str,
    ctx: &WorkerContext,
) -> EpochChanges<'s, D>
where
    D: timely::ExchangeData + Hashable<Output: Into<u64>> + Ord + Clone,
{
    collect_epochs(collection, Pipeline, &format!("Collect {name}"), false, ctx)
}

/// Attaches `sink` to `collection`: stages each epoch's consolidated changes on every worker and
/// commits them once per epoch on worker 0, together with the source `positions`
/// ([`consolidate_epochs`], then [`commit_changes`]).
///
/// `probe` passes an epoch once it is committed (or skipped as already committed); give the
/// same probe to the sources for backpressure. Errors while building the writer or committer
/// are returned; errors while running are reported through `ctx` and stop the run.
pub fn commit_sink<'s, D, S>(
    collection: VecCollection<'s, Epoch, D>,
    positions: StreamVec<'s, Epoch, PositionUpdate>,
    sink: &S,
    plan: &ResumePlan,
    ctx: &WorkerContext,
    probe: &ProbeHandle<Epoch>,
) -> Result<(), SinkError>
where
    D: timely::ExchangeData + Hashable<Output: Into<u64>> + Ord + Clone,
    S: Sink<D>,
{
    let changes = consolidate_epochs(collection, &sink.name(), ctx);
    commit_changes(&changes, positions, sink, plan, ctx, probe)
}

/// Attaches `sink` to `changes` (from [`consolidate_epochs`] or [`appended_epochs`], which
/// any number of sinks may share): its writer on every worker stages each epoch's changes,
/// and its committer on worker 0 commits them once per epoch, together with the source
/// `positions`, when both have passed the epoch. Epochs at or below the sink's checkpoint
/// are skipped.
///
/// `probe` passes an epoch once it is committed (or skipped as already committed); give the
/// same probe to the sources for backpressure. Errors while building the writer or committer
/// are returned; errors while running are reported through `ctx` and stop the run.
pub fn commit_changes<'s, D, S>(
    changes: &EpochChanges<'s, D>,
    positions: StreamVec<'s, Epoch, PositionUpdate>,
    sink: &S,
    plan: &ResumePlan,
    ctx: &WorkerContext,
    probe: &ProbeHandle<Epoch>,
) -> Result<(), SinkError>
where
    D: 'static,
    S: Sink<D>,
{
    let name = sink.name();
    let committed: Option<Epoch> = sink.checkpoint()?.map(|c| c.epoch);
    let mut writer = sink.writer(ctx.index)?;
    let mut committer = if ctx.index == 0 {
        Some(sink.committer()?)
    } else {
        None
    };

    // Stage: per worker, each complete epoch as it comes.
    let stage_ctx = ctx.clone();
    let staged_rows = crate::metrics::engine_metrics()
        .sink_rows
        .get_or_create(&crate::metrics::SinkLabels { sink: name.clone() })
        .clone();
    let stage_name = name.clone();
    let staged: StreamVec<'s, Epoch, (Epoch, S::Staged)> =
        changes
            .clone()
            .unary(Pipeline, &format!("Stage {name}"), move |_cap, _info| {
                // As in `collect_epochs`: in a multi-process cluster an epoch this worker
                // failed to stage must never look complete.
                let mut failed_epochs: Vec<Capability<Epoch>> = Vec::new();
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        for (epoch, updates) in data.flat_map(|batch| batch.drain(..)) {
                            if committed.is_some_and(|c| epoch <= c) {
                                continue;
                            }
                            let keep = |failed: &mut Vec<Capability<Epoch>>| {
                                if stage_ctx.is_multi_process() {
                                    failed.push(cap.delayed(&epoch, 0));
                                }
                            };
                            if stage_ctx.failed() {
                                keep(&mut failed_epochs);
                                continue;
                            }
                            staged_rows.inc_by(updates.len() as u64);
                            if crate::failpoint::fails("fail_stage", &stage_name) {
                                stage_ctx.fail(format!(
                                    "sink {stage_name}: staging epoch {epoch}: failpoint"
                                ));
                                keep(&mut failed_epochs);
                                continue;
                            }
                            match writer.stage(epoch, &updates) {
                                Ok(Some(piece)) => {
                                    crate::failpoint::hit("after_stage", &stage_name);
                                    output.session(&cap).give((epoch, piece))
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    stage_ctx.fail(format!(
                                        "sink {stage_name}: staging epoch {epoch}: {e}"
                                    ));
                                    keep(&mut failed_epochs);
                                }
                            }
                        }
                    });
                }
            });

    // Commit: on worker 0, once both the staged pieces and the positions have passed an epoch.
    let commit_ctx = ctx.clone();
    let mut cumulative = plan
        .start()
        .map(|c| c.positions.clone())
        .unwrap_or_default();
    let scope = staged.scope();
    let committed_stream: StreamVec<'s, Epoch, ()> = staged
        .binary_frontier::<_, timely::container::CapacityContainerBuilder<
        Vec<()>,
    >, _, _, _, _>(
        positions,
        Exchange::new(|_: &(Epoch, S::Staged)| 0u64),
        Exchange::new(|_: &PositionUpdate| 0u64),
        &format!("Commit {name}"),
        move |_cap, info| {
            struct Pending<P> {
                cap: Capability<Epoch>,
                pieces: Vec<P>,
                positions: Vec<PositionUpdate>,
            }
            // Worker 0 commits on a thread of its own: the dataflow keeps computing later
            // epochs while an epoch commits. Jobs are taken in order, so epochs commit in
            // order; an epoch's capability is held until its commit is done, so the probe
            // (and the sources' backpressure) still see only committed epochs.
            type Job<P> = EpochToCommit<P>;
            type Done = (Epoch, Result<Duration, SinkError>);
            let mut jobs: Option<std::sync::mpsc::Sender<Job<S::Staged>>> = None;
            let mut done: Option<std::sync::mpsc::Receiver<Done>> = None;
            if let Some(mut committer) = committer.take() {
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                let (job_tx, job_rx) = std::sync::mpsc::channel::<Job<S::Staged>>();
                let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
                let thread_name = name.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("commit {name}"))
                    .spawn(move || {
                        // Counters start at zero, so a sink that never failed still reports
                        // its failure count (Prometheus cannot tell absent from zero).
                        let labels = crate::metrics::SinkLabels {
                            sink: thread_name.clone(),
                        };
                        let metrics = crate::metrics::engine_metrics();
                        metrics.commits.get_or_create(&labels).inc_by(0);
                        metrics.commit_failures.get_or_create(&labels).inc_by(0);
                        let mut broken = false;
                        let max_group = committer.max_group().max(1);
                        let interval = committer.commit_interval();
                        let mut last_start: Option<std::time::Instant> = None;
                        while let Ok(first) = job_rx.recv() {
                            // Epochs that queued up while the last commit ran go together
                            // (when the committer allows it): one commit catches up.
                            let mut group = vec![first];
                            while group.len() < max_group {
                                match job_rx.try_recv() {
                                    Ok(job) => group.push(job),
                                    Err(_) => break,
                                }
                            }
                            // With a commit interval, epochs that arrive before it has passed
                            // join the group (a closed channel — the dataflow ending —
                            // commits at once).
                            if let (Some(interval), Some(last)) = (interval, last_start) {
                                let due = last + interval;
                                while group.len() < max_group {
                                    let Some(wait) =
                                        due.checked_duration_since(std::time::Instant::now())
                                    else {
                                        break;
                                    };
                                    match job_rx.recv_timeout(wait) {
                                        Ok(job) => group.push(job),
                                        Err(_) => break,
                                    }
                                }
                            }
                            let epoch = group.last().map(|(e, _, _)| *e).unwrap_or_default();
                            if broken {
                                // Answer every later epoch (in order, after the real error).
                                let skipped = SinkError::Fatal(format!(
                                    "epoch {epoch} not committed: an earlier commit failed"
                                ));
                                let _ = done_tx.send((epoch, Err(skipped)));
                                let _ = activator.activate();
                                continue;
                            }
                            crate::failpoint::hang("hang_before_commit", &thread_name);
                            let started = std::time::Instant::now();
                            last_start = Some(started);
                            let result = retry_transient("commit", || match group.as_slice() {
                                [(epoch, pieces, positions)] => {
                                    committer.commit(*epoch, pieces, positions)
                                }
                                many => committer.commit_group(many),
                            });
                            if group.len() > 1 {
                                tracing::debug!(
                                    sink = %thread_name,
                                    epochs = group.len(),
                                    last = epoch,
                                    "committed waiting epochs together"
                                );
                            }
                            let ok = result.is_ok();
                            if ok {
                                crate::failpoint::hit("after_commit", &thread_name);
                                metrics.commits.get_or_create(&labels).inc();
                                let took = started.elapsed();
                                metrics
                                    .commit_seconds
                                    .get_or_create(&labels)
                                    .observe(took.as_secs_f64());
                                metrics.commit_quantiles.record(&labels, took);
                                metrics
                                    .committed_epoch
                                    .get_or_create(&labels)
                                    .set(i64::try_from(epoch).unwrap_or(i64::MAX));
                            } else {
                                metrics.commit_failures.get_or_create(&labels).inc();
                            }
                            let _ = done_tx.send((epoch, result.map(|()| started.elapsed())));
                            let _ = activator.activate();
                            broken = !ok;
                        }
                    });
                match spawned {
                    Ok(_) => {
                        jobs = Some(job_tx);
                        done = Some(done_rx);
                    }
                    Err(e) => commit_ctx.fail(format!("sink {name}: starting its committer: {e}")),
                }
            }
            let mut inflight: std::collections::VecDeque<(Epoch, Capability<Epoch>)> =
                std::collections::VecDeque::new();
            // Also look again shortly while commits are in flight (a safety net to the
            // committer thread's activation).
            let recheck = scope.activator_for(info.address.clone());
            let mut pending: BTreeMap<Epoch, Pending<S::Staged>> = BTreeMap::new();
            move |(staged_in, staged_frontier), (pos_in, pos_frontier), _output| {
                if let Some(done) = &done {
                    loop {
                        match done.try_recv() {
                            Ok((epoch, result)) => {
                                match result {
                                    Ok(took) => tracing::debug!(
                                        sink = %name,
                                        epoch,
                                        took_ms = took.as_millis() as u64,
                                        "committed"
                                    ),
                                    Err(e) => commit_ctx.fail(format!(
                                        "sink {name}: committing epoch {epoch}: {e}"
                                    )),
                                }
                                while inflight.front().is_some_and(|(e, _)| *e <= epoch) {
                                    inflight.pop_front();
                                }
                            }
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                if !inflight.is_empty() && !commit_ctx.failed() {
                                    commit_ctx.fail(format!("sink {name}: its committer stopped"));
                                }
                                break;
                            }
                        }
                    }
                }
                // After a failure the run winds down (timely still steps the dataflow until
                // it completes): release the epochs whose commits will never be answered.
                if commit_ctx.failed() {
                    inflight.clear();
                }
                staged_in.for_each_stamp(|cap, data| {
                    for batch in data {
                        for (epoch, piece) in batch.drain(..) {
                            pending
                                .entry(epoch)
                                .or_insert_with(|| Pending {
                                    cap: cap.delayed(&epoch, 0),
                                    pieces: Vec::new(),
                                    positions: Vec::new(),
                                })
                                .pieces
                                .push(piece);
                        }
                    }
                });
                pos_in.for_each_stamp(|cap, data| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = pending.entry(epoch).or_insert_with(|| Pending {
                        cap: cap.delayed(&epoch, 0),
                        pieces: Vec::new(),
                        positions: Vec::new(),
                    });
                    for batch in data {
                        entry.positions.append(batch);
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    let epoch = *entry.key();
                    if staged_frontier.less_equal(&epoch) || pos_frontier.less_equal(&epoch) {
                        break;
                    }
                    let Pending {
                        cap,
                        pieces,
                        positions,
                    } = entry.remove();
                    let before = cumulative.clone();
                    for (p, o) in positions {
                        cumulative.advance(p, o);
                    }
                    let nothing_new = pieces.is_empty() && before == cumulative;
                    if nothing_new || committed.is_some_and(|c| epoch <= c) || commit_ctx.failed() {
                        drop(cap);
                        continue;
                    }
                    match &jobs {
                        Some(jobs) => {
                            if jobs.send((epoch, pieces, cumulative.clone())).is_ok() {
                                inflight.push_back((epoch, cap));
                            } else {
                                commit_ctx.fail(format!(
                                    "sink {name}: its committer stopped before epoch {epoch}"
                                ));
                            }
                        }
                        None => drop(cap),
                    }
                }
                if !inflight.is_empty() {
                    recheck.activate_after(Duration::from_millis(5));
                }
            }
        },
    );
    committed_stream.probe_with(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::consolidate_unstable;

    #[test]
    fn consolidation_sums_and_drops_zeros() {
        let mut v = vec![("b", 1), ("a", 2), ("b", -1), ("c", 1), ("a", 1), ("c", 0)];
        consolidate_unstable(&mut v);
        v.sort();
        assert_eq!(v, vec![("a", 3), ("c", 1)]);
        let mut empty: Vec<(u8, isize)> = Vec::new();
        consolidate_unstable(&mut empty);
        assert!(empty.is_empty());
    }

    /// Rows that share a hash (forced here by a type hashing to one value) still consolidate.
    #[test]
    fn consolidation_survives_hash_collisions() {
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
        struct Collide(u32);
        impl differential_dataflow::hashable::Hashable for Collide {
            type Output = u64;
            fn hashed(&self) -> u64 {
                7
            }
        }
        let mut v: Vec<(Collide, isize)> = [3, 1, 2, 1, 3, 3, 2, 4]
            .iter()
            .zip([1, 1, 1, 1, -1, 1, -1, 0])
            .map(|(r, d)| (Collide(*r), d))
            .collect();
        consolidate_unstable(&mut v);
        v.sort();
        assert_eq!(v, vec![(Collide(1), 2), (Collide(3), 1)]);
    }

    proptest::proptest! {
        /// Same result as summing per row in a map, whatever the rows and their order.
        #[test]
        fn consolidation_equals_summing_per_row(rows in proptest::collection::vec((0u8..20, -3isize..4), 0..200)) {
            let mut expected = std::collections::BTreeMap::<u8, isize>::new();
            for (r, d) in &rows {
                *expected.entry(*r).or_default() += d;
            }
            expected.retain(|_, d| *d != 0);
            let mut v = rows.clone();
            consolidate_unstable(&mut v);
            v.sort();
            proptest::prop_assert_eq!(v, expected.into_iter().collect::<Vec<_>>());
        }
    }
}
