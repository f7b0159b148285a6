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

use std::sync::Arc;

use differential_dataflow::trace::ExertionLogic;
use timely::WorkerConfig;

/// The effort (updates merged) an arrangement spends per scheduling while a merge is in
/// progress. Every exerting arrangement spends it on every step of its worker, and an epoch
/// that arrives meanwhile takes several steps to flow through: 20,000 (tried) made small
/// epochs on a large history slower (p99 280 ms vs 120 ms at 2,000); 2,000 still finishes a
/// load's merges within seconds of idle time.
pub const DEFAULT_IDLE_MERGE_EFFORT: usize = 2_000;

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
}
