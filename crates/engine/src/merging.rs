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
//! how far they have sealed their input ([`inputs_sealed_to`]), and [`track_arrivals`] marks
//! where the data arrives last (the engine's sinks use it). While a sealed epoch has not
//! arrived everywhere, an arrangement spends no idle effort: it reschedules itself with zero
//! effort, so that it takes up its merge at its first scheduling after the epoch has arrived.
//! (Stop 14 woke the arrangements instead, by activating every operator built before the
//! tracker; activating an operator timely had already shut down, while progress was still
//! reported at it, panics inside timely — the `alluvium demo` hit it in about a third of its
//! runs. Rescheduling with zero effort measured the same latencies; its cost is that a worker
//! with a merge in progress polls instead of parking while it waits for an epoch's data from
//! its peers.)
//!
//! Measured on 2.35 M messages of history, 500 epochs of 1k events (2 workers): p50 / p99 /
//! max 21.8 / 62.4 / 88.9 ms when exerting always, 19.5 / 41.8 / 54.9 ms when not during
//! epochs; with epochs 100 ms apart 27.4 / 49.7 / 57.7 → 22.4 / 42.9 / 46.5 ms. Even 10
//! updates per scheduling during an epoch cost a third of that gain: any fuel lets a merge
//! whose keys are done complete, and the steps of an epoch are many.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::trace::ExertionLogic;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;
use timely::WorkerConfig;

use crate::Epoch;

/// The effort (updates merged) an arrangement spends per scheduling while a merge is in
/// progress and the worker is idle. Every exerting arrangement spends it on every step of its
/// worker: 20,000 (tried, before idleness was tracked) made small epochs on a large history
/// slower (p99 280 ms vs 120 ms at 2,000); 2,000 finishes a load's merges within seconds of
/// idle time.
pub const DEFAULT_IDLE_MERGE_EFFORT: usize = 2_000;

/// What this worker thread knows about epochs in flight.
#[derive(Default)]
struct WorkerEpochs {
    /// The greatest input frontier a source on this worker has sealed to.
    sealed: Option<Epoch>,
    /// The frontiers seen by the arrival trackers of this worker (`None`: complete).
    arrivals: Vec<Rc<Cell<Option<Epoch>>>>,
}

thread_local! {
    static WORKER_EPOCHS: RefCell<WorkerEpochs> = RefCell::new(WorkerEpochs::default());
}

/// A source on this worker thread has sealed its input up to `epoch` (no more data for
/// earlier epochs will come from it).
pub fn inputs_sealed_to(epoch: Epoch) {
    WORKER_EPOCHS.with(|w| {
        let mut w = w.borrow_mut();
        w.sealed = Some(w.sealed.map_or(epoch, |s| s.max(epoch)));
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
            // While an epoch is in flight: no effort, but `Some` keeps the arrangement
            // rescheduling itself, so that it resumes once the epoch has arrived.
            .map(|effort| {
                if WORKER_EPOCHS.with(|w| w.borrow().in_flight()) {
                    0
                } else {
                    effort
                }
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
            assert_eq!(logic(&merging), Some(0));
            while probe.less_than(&1) {
                worker.step();
            }
            assert!(!epoch_in_flight());
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
            let spans = |trace: &mut differential_dataflow::operators::arrange::TraceAgent<_>| {
                let mut n = 0;
                trace.map_spans(|_| n += 1);
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
            // Idle: the arrangement, rescheduling itself with no effort while the epoch was
            // in flight, now spends its effort.
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
