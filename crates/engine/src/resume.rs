//! Resuming after a restart: from sink checkpoints to replay epochs.
//!
//! A differential dataflow keeps its state (counts, latest versions, join indexes) in memory.
//! After a crash that state is gone, while the sinks hold tables that reflect everything up
//! to their last committed epoch. Starting the sources *at* the committed positions would feed
//! the graph only the new records, and every stateful operator would emit wrong changes.
//!
//! So the engine rehydrates: sources read their partitions again from the start, and every
//! record below a sink checkpoint's position is stamped with that checkpoint's epoch (a
//! *replay epoch*). The graph rebuilds its state, the changes it emits for a replay epoch are
//! exactly what the sink committed back then, and the sink skips the epochs it already has.
//! Sinks that are at different checkpoints (an Iceberg table one epoch ahead of a warehouse)
//! each get precisely the epochs they miss. Live epochs continue after the last checkpoint.
//!
//! The checkpoints must come from one history: each epoch ends at one set of positions, and
//! a later epoch never ends before an earlier one. Two instances of a pipeline writing the
//! same sinks at once would break that (each cuts its epochs at other positions), and no
//! replay could then reproduce both; [`ResumePlan::from_checkpoints`] refuses such a set
//! rather than feed the sinks wrong changes. Sinks prevent it with [`crate::Sink::claim`].
//!
//! Stateless pipelines may skip the replay with [`Rehydration::FromCheckpoint`]: sources then
//! start at the lowest checkpoint.

use crate::epoch::Epoch;
use crate::error::EngineError;
use crate::position::{Checkpoint, PartitionId};

/// Where sources start reading after a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rehydration {
    /// Re-read every partition from its beginning to rebuild the dataflow state (required for
    /// stateful graphs; the default).
    #[default]
    FromStart,
    /// Start at the lowest checkpoint (only correct for stateless graphs).
    FromCheckpoint,
}

/// How the sources of one run resume: which offsets belong to which replay epoch, and where
/// live epochs begin. The same plan must be given to every source and every sink of a run
/// (across processes: [`crate::runtime::from_worker_zero`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePlan {
    boundaries: Vec<Checkpoint>,
    start: Option<Checkpoint>,
}

impl ResumePlan {
    /// The plan of a first run: no checkpoint, read everything live.
    pub fn fresh() -> Self {
        ResumePlan::default()
    }

    /// Builds the plan from the checkpoints of all sinks of the pipeline (`None` for a sink
    /// that never committed). Fails with [`EngineError::Checkpoints`] when they do not come
    /// from one history: one epoch ending at two offsets of a partition, or a later epoch
    /// ending before an earlier one.
    pub fn from_checkpoints<I>(
        checkpoints: I,
        rehydration: Rehydration,
    ) -> Result<Self, EngineError>
    where
        I: IntoIterator<Item = Option<Checkpoint>>,
    {
        let mut all: Vec<Option<Checkpoint>> = checkpoints.into_iter().collect();
        let every_sink_committed = !all.is_empty() && all.iter().all(Option::is_some);
        let mut boundaries: Vec<Checkpoint> = all.drain(..).flatten().collect();
        boundaries.sort_by_key(|c| c.epoch);
        check_one_history(&boundaries)?;
        boundaries.dedup_by_key(|c| c.epoch);
        let start = if rehydration == Rehydration::FromCheckpoint && every_sink_committed {
            // Everything below the lowest checkpoint is committed everywhere: no need to read it.
            Some(boundaries.remove(0))
        } else {
            None
        };
        Ok(ResumePlan { boundaries, start })
    }

    /// The replay epochs, in epoch order, each with the positions that end it.
    pub fn boundaries(&self) -> &[Checkpoint] {
        &self.boundaries
    }

    /// The offset to start reading `partition` at; `None` means its beginning.
    pub fn start_offset(&self, partition: &PartitionId) -> Option<i64> {
        self.start.as_ref().and_then(|c| c.positions.get(partition))
    }

    /// The checkpoint the sources start at, when they skip history.
    pub fn start(&self) -> Option<&Checkpoint> {
        self.start.as_ref()
    }

    /// The least epoch this run emits anything at.
    pub fn first_epoch(&self) -> Epoch {
        match self.boundaries.first() {
            Some(c) => c.epoch,
            None => self.first_live_epoch(),
        }
    }

    /// The least epoch that live (not replayed) records may get.
    pub fn first_live_epoch(&self) -> Epoch {
        let last = self
            .boundaries
            .last()
            .or(self.start.as_ref())
            .map(|c| c.epoch + 1);
        last.unwrap_or(0)
    }

    /// The replay epoch of the record at `offset` of `partition`, or `None` when it is live.
    #[inline]
    pub fn replay_epoch(&self, partition: &PartitionId, offset: i64) -> Option<Epoch> {
        self.boundaries
            .iter()
            .find(|c| c.positions.get(partition).is_some_and(|end| offset < end))
            .map(|c| c.epoch)
    }

    /// The index of the first boundary that `partition` has not yet passed at `next_offset`.
    pub fn pending_boundary(&self, partition: &PartitionId, next_offset: i64) -> Option<usize> {
        self.boundaries.iter().position(|c| {
            c.positions
                .get(partition)
                .is_some_and(|end| next_offset < end)
        })
    }
}

/// Checks that `sorted` (by epoch) describes one history: on every partition two of them
/// share, the same epoch ends at the same offset and a later epoch at the same or a later one.
/// (A partition one of them lacks is not compared: it had not been read then.)
fn check_one_history(sorted: &[Checkpoint]) -> Result<(), EngineError> {
    for pair in sorted.windows(2) {
        let [a, b] = pair else { continue };
        for (partition, end) in a.positions.iter() {
            let Some(later) = b.positions.get(partition) else {
                continue;
            };
            let broken = if a.epoch == b.epoch {
                later != end
            } else {
                later < end
            };
            if broken {
                return Err(EngineError::Checkpoints(format!(
                    "epoch {} ends at offset {end} of {partition} in one sink and epoch {} at \
                     offset {later} in another; the sinks were written by different runs at once \
                     (two instances of the pipeline?), and no replay can reproduce both. Restore \
                     them from one run, or start over with empty sinks",
                    a.epoch, b.epoch
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Positions;

    fn cp(epoch: Epoch, offsets: &[(i32, i64)]) -> Checkpoint {
        let mut positions = Positions::new();
        for (p, o) in offsets {
            positions.advance(PartitionId::new("t", *p), *o);
        }
        Checkpoint { epoch, positions }
    }

    #[test]
    fn fresh_plan_is_all_live() {
        let plan = ResumePlan::from_checkpoints([None, None], Rehydration::FromStart).unwrap();
        assert_eq!(plan.first_live_epoch(), 0);
        assert_eq!(plan.replay_epoch(&PartitionId::new("t", 0), 0), None);
    }

    #[test]
    fn records_below_checkpoints_get_replay_epochs() {
        let plan = ResumePlan::from_checkpoints(
            [
                Some(cp(20, &[(0, 10), (1, 4)])),
                Some(cp(10, &[(0, 5)])),
                None,
            ],
            Rehydration::FromStart,
        )
        .unwrap();
        let p0 = PartitionId::new("t", 0);
        let p1 = PartitionId::new("t", 1);
        assert_eq!(plan.first_epoch(), 10);
        assert_eq!(plan.replay_epoch(&p0, 4), Some(10));
        assert_eq!(plan.replay_epoch(&p0, 5), Some(20));
        assert_eq!(plan.replay_epoch(&p0, 10), None);
        assert_eq!(plan.replay_epoch(&p1, 0), Some(20));
        assert_eq!(plan.first_live_epoch(), 21);
        assert_eq!(plan.start_offset(&p0), None);
        assert_eq!(plan.pending_boundary(&p0, 7), Some(1));
    }

    #[test]
    fn stateless_plans_start_at_the_lowest_checkpoint() {
        let plan = ResumePlan::from_checkpoints(
            [Some(cp(20, &[(0, 10)])), Some(cp(10, &[(0, 5)]))],
            Rehydration::FromCheckpoint,
        )
        .unwrap();
        let p0 = PartitionId::new("t", 0);
        assert_eq!(plan.start_offset(&p0), Some(5));
        assert_eq!(plan.replay_epoch(&p0, 6), Some(20));
        assert_eq!(plan.first_live_epoch(), 21);
    }

    #[test]
    fn checkpoints_of_two_histories_are_refused() {
        // Two instances cut epoch 20 at different offsets of partition 0.
        let same_epoch = ResumePlan::from_checkpoints(
            [Some(cp(20, &[(0, 10), (1, 4)])), Some(cp(20, &[(0, 12)]))],
            Rehydration::FromStart,
        )
        .unwrap_err()
        .to_string();
        assert!(
            same_epoch.contains("epoch 20 ends at offset 10 of t[0]"),
            "{same_epoch}"
        );
        // A later epoch ending before an earlier one.
        let backwards = ResumePlan::from_checkpoints(
            [
                Some(cp(20, &[(0, 10), (1, 4)])),
                Some(cp(21, &[(0, 12), (1, 3)])),
            ],
            Rehydration::FromStart,
        )
        .unwrap_err()
        .to_string();
        assert!(backwards.contains("epoch 21 at offset 3"), "{backwards}");
        // One history: equal ends for equal epochs, partitions first read later.
        ResumePlan::from_checkpoints(
            [
                Some(cp(20, &[(0, 10)])),
                Some(cp(20, &[(0, 10)])),
                Some(cp(21, &[(0, 10), (1, 3)])),
            ],
            Rehydration::FromStart,
        )
        .unwrap();
    }
}
