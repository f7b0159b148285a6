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
//! how far their input is sealed ([`inputs_sealed_to`]) and sinks register a probe of what
//! they have received ([`track_computed`]). While a sealed epoch has not reached every tracked
//! probe, arrangements spend no idle effort; between epochs, all of it. Measured on 2.35 M
//! messages of history, 500 epochs of 1k events: p50 / p99 / max 21.8 / 62.4 / 88.9 ms when
//! exerting always, 19.5 / 41.8 / 54.9 ms when not during epochs; with epochs 100 ms apart
//! 27.4 / 49.7 / 57.7 → 22.4 / 42.9 / 46.5 ms. Even 10 updates per scheduling during an epoch
//! cost a third of that gain: any fuel lets a merge whose keys are done complete, and the
//! steps of an epoch are many.
//!
//! The cost: during an epoch, an arrangement with a merge in progress still reschedules itself
//! (with no effort) instead of stopping — nothing would wake it when the epoch is through — so
//! a worker that finished its share of an epoch before its peers polls instead of parking
//! until the epoch reaches its sinks.

use std::cell::RefCell;
use std::sync::Arc;

use differential_dataflow::trace::ExertionLogic;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
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
    /// Probes of what the sinks on this worker have received.
    computed: Vec<ProbeHandle<Epoch>>,
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

/// Registers `probe` as a place the data of this worker thread reaches last (a sink's input):
/// an epoch is in flight until every registered probe has passed it.
pub fn track_computed(probe: &ProbeHandle<Epoch>) {
    WORKER_EPOCHS.with(|w| w.borrow_mut().computed.push(probe.clone()));
}

/// Forgets what this worker thread was told about sources and sinks (a new run starts).
pub fn reset_worker() {
    WORKER_EPOCHS.with(|w| *w.borrow_mut() = WorkerEpochs::default());
}

/// Whether some sealed epoch has not yet reached every tracked probe of this worker thread.
pub fn epoch_in_flight() -> bool {
    WORKER_EPOCHS.with(|w| {
        let w = w.borrow();
        w.sealed
            .is_some_and(|sealed| w.computed.iter().any(|p| p.less_than(&sealed)))
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
            // While an epoch is in flight: no effort, but `Some` keeps the arrangement
            // rescheduling itself, so it resumes as soon as the epoch is through.
            .then(|| if epoch_in_flight() { 0 } else { effort })
    });
    config.set::<ExertionLogic>("differential/default_exert_logic".to_string(), logic);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exerts_only_while_a_merge_is_in_progress() {
        let mut config = WorkerConfig::default();
        idle_merging(&mut config, Some(7));
        let logic = config
            .get::<ExertionLogic>("differential/default_exert_logic")
            .cloned()
            .unwrap();
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
    fn an_epoch_in_flight_lowers_the_effort() {
        use timely::dataflow::operators::{Input, Probe};
        let mut config = WorkerConfig::default();
        idle_merging(&mut config, Some(2_000));
        let logic = config
            .get::<ExertionLogic>("differential/default_exert_logic")
            .cloned()
            .unwrap();
        let merging = [(3, 2, 100)];
        timely::execute_directly(move |worker| {
            reset_worker();
            let probe = ProbeHandle::new();
            let mut input = worker.dataflow::<Epoch, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<u64>>();
                stream.probe_with(&probe);
                input
            });
            track_computed(&probe);
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
}
