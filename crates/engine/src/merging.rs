//! Finishing arrangement merges while a worker is idle.
//!
//! Differential keeps each arrangement as a spine of sorted batches and merges them
//! progressively: every batch that arrives pays a share of the merges in progress, in
//! proportion to its size. That bounds the work of each batch, but it also means that after
//! a large load — a replay of history, a burst — the merges it started are paid for by the
//! small epochs that follow: on 2.35 M messages of history the first 1k-event epochs took
//! 25–95 ms, the later ones 12–17 ms, with nothing different in their input.
//!
//! Differential can spend effort on arrangements when no data arrives (its "exertion"), but
//! its default policy keeps merging until each arrangement is a single batch — and on a large
//! arrangement every new small batch then starts a merge with the whole history, so each epoch
//! pays for a merge of everything. [`idle_merging`] exerts only while a merge is *in progress*
//! (a spine level holds two batches): idle time finishes the merges a load started, and a
//! settled spine stays as it is.
//!
//! *Idle* has to mean idle. An exerting arrangement reschedules itself, so it spends its
//! effort on every step of its worker — including the many steps an epoch takes to flow
//! through the graph, where that work delays the epoch (perf: half the samples of the slowest
//! small epochs). So each worker thread tracks whether an epoch is in flight: sources report
//! how far they have sealed an epoch that carried records ([`inputs_sealed_to`]), and
//! [`track_arrivals`] marks where the data arrives last (the engine's sinks use it). While a
//! sealed epoch has not arrived everywhere, an arrangement spends no idle effort. For the
//! first [`POLL_WHILE_IN_FLIGHT`] of such a stretch it still reschedules itself (with zero
//! effort), which keeps its worker polling rather than parking between the exchanges of a
//! small epoch, and takes up its merge at its first scheduling after the epoch has arrived.
//! After that it stops rescheduling and notes that it deferred a merge. When the epoch has
//! arrived, the tracker wakes the worker's sources ([`register_source`]); a source whose open
//! epoch has no records yet closes it at once ([`take_idle_merge_request`]), and that
//! frontier change schedules every arrangement, which now, with nothing in flight, merges
//! with the idle effort and reschedules itself until its merges are done. While epochs follow
//! each other (a backlog), the next epoch's data and frontier changes schedule the
//! arrangements anyway, and their merges progress as differential pays for them, by the size
//! of each new batch.
//!
//! (Stop 14 woke the arrangements by activating every operator built before the tracker;
//! activating an operator timely had already shut down, while progress was still reported at
//! it, panics inside timely — the `alluvium demo` hit it in about a third of its runs. A
//! source has no inputs, so waking one that has finished is harmless. Stops 15–17 had the
//! arrangements reschedule themselves with zero effort for as long as an epoch was in flight:
//! while catching up on a backlog, where epochs are always in flight, that polling was a
//! quarter of the workers' time, taken from the broker and the database on a shared machine.
//! Not polling at all made small epochs slower: a parked worker wakes late.)
//!
//! Measured on 2.35 M messages of history, 500 epochs of 1k events (2 workers): p50 / p99 /
//! max 21.8 / 62.4 / 88.9 ms when exerting always, 19.5 / 41.8 / 54.9 ms when not during
//! epochs; with epochs 100 ms apart 27.4 / 49.7 / 57.7 → 22.4 / 42.9 / 46.5 ms. Even 10
//! updates per scheduling during an epoch cost a third of that gain: any fuel lets a merge
//! whose keys are done complete, and the steps of an epoch are many.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use differential_dataflow::trace::ExertionLogic;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;
use timely::scheduling::Activator;
use timely::WorkerConfig;

use crate::Epoch;

/// The effort (updates merged) an arrangement spends per scheduling while a merge is in
/// progress and the worker is idle. Every exerting arrangement spends it on every step of its
/// worker: 20,000 (tried, before idleness was tracked) made small epochs on a large history
/// slower (p99 280 ms vs 120 ms at 2,000); 2,000 finishes a load's merges within seconds of
/// idle time.
pub const DEFAULT_IDLE_MERGE_EFFORT: usize = 2_000;

/// How long after epochs start to be in flight an arrangement with a merge in progress still
/// reschedules itself (with zero effort). The polling keeps its worker from parking between
/// the exchanges of a small epoch — each wake-up of a parked thread costs latency, and small
/// epochs were slower without it (p50 26–49 ms vs. 23–29 ms, 1k-event epochs on 2.35 M
/// messages of history) — while a backlog, where epochs are in flight for good, no longer
/// polls: there the polling was a quarter of the workers' time.
pub const POLL_WHILE_IN_FLIGHT: std::time::Duration = std::time::Duration::from_millis(50);

/// What this worker thread knows about epochs in flight.
#[derive(Default)]
struct WorkerEpochs {
    /// The greatest input frontier a source on this worker has sealed to.
    sealed: Option<Epoch>,
    /// The frontiers seen by the arrival trackers of this worker (`None`: complete).
    arrivals: Vec<Rc<Cell<Option<Epoch>>>>,
    /// The sources of this worker, woken when deferred merges may resume.
    sources: Vec<Activator>,
    /// An arrangement deferred its merge in progress while an epoch was in flight.
    deferred: bool,
    /// When the current stretch of epochs in flight began.
    in_flight_since: Option<Instant>,
}

thread_local! {
    static WORKER_EPOCHS: RefCell<WorkerEpochs> = RefCell::new(WorkerEpochs::default());
}

/// A source on this worker thread has sealed its input up to `epoch` (no more data for
/// earlier epochs will come from it) after an epoch that carried records: that epoch is in
/// flight until it has arrived at every tracker. (Epochs without records are not reported:
/// they only move frontiers, which is what wakes the arrangements for idle merging.)
pub fn inputs_sealed_to(epoch: Epoch) {
    WORKER_EPOCHS.with(|w| {
        let mut w = w.borrow_mut();
        if !w.in_flight() {
            w.in_flight_since = Some(Instant::now());
        }
        w.sealed = Some(w.sealed.map_or(epoch, |s| s.max(epoch)));
    });
}

/// Registers a source of this worker thread, to be woken when an epoch in flight has
/// arrived and an arrangement deferred its merge meanwhile (see [`take_idle_merge_request`]).
pub fn register_source(activator: Activator) {
    WORKER_EPOCHS.with(|w| w.borrow_mut().sources.push(activator));
}

/// Whether an arrangement of this worker deferred its merge while an epoch was in flight, and
/// no epoch is in flight any more. Taking the request clears it: the source that takes it
/// closes its epoch now if the epoch has no records yet, and the frontier change schedules
/// every arrangement, which then merges with the idle effort (nothing is in flight).
pub fn take_idle_merge_request() -> bool {
    WORKER_EPOCHS.with(|w| {
        let mut w = w.borrow_mut();
        let take = w.deferred && !w.in_flight();
        if take {
            w.deferred = false;
        }
        take
    })
}

/// Notes a deferred merge and wakes the sources, as an arrangement and the tracker do: for
/// the source's tests, which have no arrangement whose merges take 50 ms.
#[cfg(test)]
pub(crate) fn defer_a_merge_for_test() {
    WORKER_EPOCHS.with(|w| {
        let mut w = w.borrow_mut();
        w.deferred = true;
        w.sources.iter().for_each(Activator::activate);
    });
}

/// Forgets what this worker thread was told about sources and trackers (a new run starts).
pub fn reset_worker() {
    WORKER_EPOCHS.with(|w| *w.borrow_mut() = WorkerEpochs::default());
}

/// Whether some sealed epoch has not yet arrived at every tracker of this worker thread.
pub fn epoch_in_flight() -> bool {
    WORKER_EPOCHS.with(|w| w.borrow().in_flight())
}

impl WorkerEpochs {
    fn in_flight(&self) -> bool {
        self.sealed.is_some_and(|sealed| {
            self.arrivals
                .iter()
                .any(|f| f.get().is_some_and(|f| f < sealed))
        })
    }
}

/// `stream`, unchanged, with its arrivals tracked: an epoch sealed on this worker is in flight
/// until it has passed here (and every other tracker of the worker). Put it where the data
/// arrives last, e.g. in front of a sink.
pub fn track_arrivals<'s, D: Clone + 'static>(
    stream: StreamVec<'s, Epoch, D>,
) -> StreamVec<'s, Epoch, D> {
    let seen = Rc::new(Cell::new(Some(Epoch::default())));
    WORKER_EPOCHS.with(|w| w.borrow_mut().arrivals.push(seen.clone()));
    stream.unary_frontier(Pipeline, "TrackArrivals", move |_cap, _info| {
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| output.session(&cap).give_containers(data));
            seen.set(frontier.frontier().first().copied());
            // The epoch has arrived everywhere and a merge waits for idle time: wake the
            // sources (a source has no inputs, so waking one that has finished is harmless,
            // unlike waking an operator timely has shut down).
            WORKER_EPOCHS.with(|w| {
                let w = w.borrow();
                if w.deferred && !w.in_flight() {
                    w.sources.iter().for_each(Activator::activate);
                }
            });
        }
    })
}

/// Configures `config` so that arrangements finish their merges in progress while the worker
/// is idle, `effort` updates per scheduling (see the module docs). `None` leaves
/// differential's default: merges progress only as new batches arrive.
pub fn idle_merging(config: &mut WorkerConfig, effort: Option<usize>) {
    let Some(effort) = effort.filter(|&e| e > 0) else {
        return;
    };
    let logic: ExertionLogic = Arc::new(move |levels: &[(usize, usize, usize)]| {
        // `(level, batches, length)` per level: two batches at a level are a merge in progress.
        levels
            .iter()
            .any(|&(_, batches, _)| batches > 1)
            .then_some(effort)
            // While an epoch is in flight: no effort, and no rescheduling (an arrangement
            // that rescheduled itself with zero effort kept its worker polling instead of
            // parking: a quarter of the workers' time while catching up on a backlog). The
            // arrangement is scheduled again by its next data or frontier change; for the
            // idle time after the epoch, its arrival wakes the sources, which close an empty
            // epoch to make that frontier change (`take_idle_merge_request`).
            .and_then(|effort| {
                WORKER_EPOCHS.with(|w| {
                    let mut w = w.borrow_mut();
                    if !w.in_flight() {
                        Some(effort)
                    } else if w
                        .in_flight_since
                        .is_some_and(|since| since.elapsed() < POLL_WHILE_IN_FLIGHT)
                    {
                        // Early in an epoch's flight: no effort, but rescheduled, so that
                        // the worker polls (see `POLL_WHILE_IN_FLIGHT`).
                        Some(0)
                    } else {
                        w.deferred = true;
                        None
                    }
                })
            })
    });
    config.set::<ExertionLogic>("differential/default_exert_logic".to_string(), logic);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exertion policy `idle_merging` installs for `effort`.
    fn policy(effort: usize) -> ExertionLogic {
        let mut config = WorkerConfig::default();
        idle_merging(&mut config, Some(effort));
        config
            .get::<ExertionLogic>("differential/default_exert_logic")
            .cloned()
            .unwrap()
    }

    #[test]
    fn exerts_only_while_a_merge_is_in_progress() {
        let logic = policy(7);
        // Several settled levels: nothing to do.
        assert_eq!(logic(&[(3, 1, 100), (1, 1, 4), (0, 0, 0)]), None);
        // A level merging two batches: exert.
        assert_eq!(logic(&[(3, 1, 100), (2, 2, 40), (0, 0, 0)]), Some(7));
        // Off.
        let mut config = WorkerConfig::default();
        idle_merging(&mut config, None);
        assert!(config
            .get::<ExertionLogic>("differential/default_exert_logic")
            .is_none());
    }

    #[test]
    fn no_idle_effort_while_an_epoch_is_in_flight() {
        use timely::dataflow::operators::{Input, Probe};
        let logic = policy(2_000);
        let merging = [(3, 2, 100)];
        timely::execute_directly(move |worker| {
            reset_worker();
            let probe = timely::dataflow::ProbeHandle::new();
            let mut input = worker.dataflow::<Epoch, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<u64>>();
                track_arrivals(stream).probe_with(&probe);
                input
            });
            assert_eq!(logic(&merging), Some(2_000), "nothing sealed yet");
            input.send(1);
            input.advance_to(1);
            inputs_sealed_to(1);
            assert!(epoch_in_flight());
            assert!(!take_idle_merge_request(), "nothing deferred yet");
            assert_eq!(
                logic(&merging),
                Some(0),
                "early in flight: no effort, but polling"
            );
            assert!(!take_idle_merge_request(), "nothing deferred yet");
            std::thread::sleep(POLL_WHILE_IN_FLIGHT + std::time::Duration::from_millis(10));
            assert_eq!(logic(&merging), None, "later: no effort, no rescheduling");
            assert!(!take_idle_merge_request(), "still in flight");
            while probe.less_than(&1) {
                worker.step();
            }
            assert!(!epoch_in_flight());
            assert!(take_idle_merge_request(), "a merge was deferred");
            assert!(!take_idle_merge_request(), "taken once");
            assert_eq!(logic(&merging), Some(2_000));
            reset_worker();
        });
    }

    #[test]
    fn a_merge_deferred_during_an_epoch_resumes_when_the_epoch_arrives() {
        use differential_dataflow::input::Input;
        use differential_dataflow::trace::TraceReader;
        use timely::dataflow::operators::Probe;
        use timely::progress::frontier::AntichainRef;

        let mut worker = WorkerConfig::default();
        idle_merging(&mut worker, Some(2_000));
        let config = timely::Config {
            communication: timely::CommunicationConfig::Thread,
            worker,
        };
        timely::execute(config, |worker| {
            reset_worker();
            let probe = timely::dataflow::ProbeHandle::new();
            let (mut input, mut trace) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (input, values) = scope.new_collection::<u64, isize>();
                let arranged = values.arrange_by_self();
                let trace = arranged.trace.clone();
                track_arrivals(arranged.as_collection(|k, _| *k).inner).probe_with(&probe);
                (input, trace)
            });
            // Batches with updates (the empty epoch below adds an empty one).
            let spans = |trace: &mut differential_dataflow::operators::arrange::TraceAgent<_>| {
                let mut n = 0;
                trace.map_spans(|b| n += usize::from(b.inner.is_some()));
                n
            };
            // Two batches of 2^16 updates: the second starts a merge of 2^17, which no
            // further batch pays for.
            for epoch in 1..=2u64 {
                for v in 0..65_536u64 {
                    input.insert(epoch << 32 | v);
                }
                input.advance_to(epoch);
                input.flush();
                inputs_sealed_to(epoch);
                // A trace handle that holds back compaction holds back merging too: allow it
                // now, so that the merge starts while the epoch is in flight.
                let upper = [epoch];
                trace.set_logical_compaction(AntichainRef::new(&upper));
                trace.set_physical_compaction(AntichainRef::new(&upper));
                while probe.less_than(&epoch) {
                    worker.step();
                }
            }
            let deferred = spans(&mut trace);
            // Had the arrangement deferred its merge while the epoch was in flight (rather than
            // polled), a source would now close an empty epoch, as here, and the frontier
            // change schedules the arrangement, which spends its idle effort.
            if take_idle_merge_request() {
                input.advance_to(3);
                input.flush();
            }
            for _ in 0..1_000 {
                if spans(&mut trace) < deferred {
                    break;
                }
                worker.step();
            }
            assert!(
                spans(&mut trace) < deferred,
                "the merge in progress ({deferred} spans) did not go on while idle"
            );
            reset_worker();
        })
        .unwrap();
    }
}
