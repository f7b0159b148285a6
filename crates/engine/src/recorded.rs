//! Replaying a log recorded elsewhere, with its original offsets.
//!
//! A pipeline that keeps what it read — a lake's bronze tables hold every message with its
//! topic, partition and offset — can be rebuilt from that record long after the broker has
//! deleted the messages. [`RecordedLog`] holds such a record and reads it like a source:
//! every record is emitted at the offset it had, and a partition's position is the offset
//! after the last record read, exactly what the original source reported. Checkpoints of a
//! replay therefore mean the same as those of the live pipeline: a run from the broker can
//! resume where the replay stopped, and a replay that crashed resumes from its own commits.
//!
//! [`ReplayLog`] is what the in-memory logs share, so a graph can be driven by either, and
//! [`LogReader`] reads both: a [`MemoryLog`] partition addresses records by index (offset =
//! index), a recorded one by the offsets it keeps ([`PartitionData`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::position::PartitionId;
use crate::resume::ResumePlan;
use crate::source::{owned_by, MemoryLog, MemoryReader, PartitionReader, ReadStatus};

/// A partitioned log held in memory that a source can replay.
pub trait ReplayLog: Clone + Send + Sync + 'static {
    /// The records.
    type Record: Clone + 'static;
    /// Its reader.
    type Reader: PartitionReader<Record = Self::Record>;
    /// The topic (source) name.
    fn topic(&self) -> &str;
    /// A reader of the partitions owned by `worker` of `peers`, from the plan's offsets.
    fn reader(&self, worker: usize, peers: usize, plan: &ResumePlan) -> Self::Reader;
}

impl<D: Clone + Send + Sync + 'static> ReplayLog for MemoryLog<D> {
    type Record = D;
    type Reader = MemoryReader<D>;

    fn topic(&self) -> &str {
        &self.topic
    }

    fn reader(&self, worker: usize, peers: usize, plan: &ResumePlan) -> MemoryReader<D> {
        MemoryLog::reader(self, worker, peers, plan)
    }
}

/// A recorded log: per partition, records with their original offsets, ascending.
#[derive(Clone, Debug)]
pub struct RecordedLog<D> {
    topic: String,
    /// Partition `p` at index `p`; a partition with no record is empty.
    partitions: Vec<Recorded<D>>,
}

/// One partition of a [`RecordedLog`]: its records with their offsets, ascending.
#[derive(Debug)]
pub struct Recorded<D>(Arc<Vec<(i64, D)>>);

impl<D> Clone for Recorded<D> {
    fn clone(&self) -> Self {
        Recorded(self.0.clone())
    }
}

/// Why records cannot form a log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordedLogError {
    /// A negative partition number.
    #[error("topic `{topic}`: negative partition {partition}")]
    NegativePartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// Two records at one offset of a partition (the record holds a message twice).
    #[error("topic `{topic}` partition {partition}: two records at offset {offset}")]
    DuplicateOffset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
    },
}

impl<D> RecordedLog<D> {
    /// The log of `records` (partition, offset, record), in any order. Offsets may have gaps
    /// (retention, compaction, transaction markers); one offset may not appear twice.
    pub fn new(
        topic: impl Into<String>,
        records: impl IntoIterator<Item = (i32, i64, D)>,
    ) -> Result<Self, RecordedLogError> {
        let topic = topic.into();
        let mut by_partition: BTreeMap<i32, Vec<(i64, D)>> = BTreeMap::new();
        for (partition, offset, record) in records {
            if partition < 0 {
                return Err(RecordedLogError::NegativePartition { topic, partition });
            }
            by_partition
                .entry(partition)
                .or_default()
                .push((offset, record));
        }
        let count = by_partition
            .keys()
            .next_back()
            .map_or(0, |p| *p as usize + 1);
        let mut partitions: Vec<Vec<(i64, D)>> = (0..count).map(|_| Vec::new()).collect();
        for (partition, mut records) in by_partition {
            records.sort_by_key(|(offset, _)| *offset);
            if let Some(w) = records.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(RecordedLogError::DuplicateOffset {
                    topic,
                    partition,
                    offset: w[0].0,
                });
            }
            partitions[partition as usize] = records;
        }
        Ok(RecordedLog {
            topic,
            partitions: partitions
                .into_iter()
                .map(|p| Recorded(Arc::new(p)))
                .collect(),
        })
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(|p| p.0.len()).sum()
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Partitions (the highest partition number with a record, plus one).
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// The offset after the last record of each partition (`None` for an empty one).
    pub fn ends(&self) -> Vec<Option<i64>> {
        self.partitions
            .iter()
            .map(|p| p.0.last().map(|(o, _)| o + 1))
            .collect()
    }
}

impl<D: Clone + Send + Sync + 'static> ReplayLog for RecordedLog<D> {
    type Record = D;
    type Reader = RecordedReader<D>;

    fn topic(&self) -> &str {
        &self.topic
    }

    fn reader(&self, worker: usize, peers: usize, plan: &ResumePlan) -> RecordedReader<D> {
        LogReader::new(&self.topic, &self.partitions, worker, peers, plan)
    }
}

/// Reads the owned partitions of a [`RecordedLog`], round-robin.
pub type RecordedReader<D> = LogReader<Recorded<D>>;

/// One partition's records held in memory, addressed by index.
pub trait PartitionData: Clone + 'static {
    /// The records.
    type Record: Clone + 'static;
    /// Records held.
    fn len(&self) -> usize;
    /// Whether the partition holds no record.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The offset and the record at index `i` (`i < len()`).
    fn at(&self, i: usize) -> (i64, &Self::Record);
    /// The index of the first record at or after `offset`.
    fn index_of(&self, offset: i64) -> usize;
    /// The position before anything is read, for a plan that starts at `start`.
    fn initial_position(&self, start: Option<i64>) -> Option<i64>;
}

/// A [`MemoryLog`] partition: a record's offset is its index, and the position is always
/// known (0 before the first record).
impl<D: Clone + 'static> PartitionData for Arc<Vec<D>> {
    type Record = D;

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn at(&self, i: usize) -> (i64, &D) {
        (i as i64, &self[i])
    }

    fn index_of(&self, offset: i64) -> usize {
        usize::try_from(offset.max(0)).unwrap_or(usize::MAX)
    }

    fn initial_position(&self, start: Option<i64>) -> Option<i64> {
        Some(start.unwrap_or(0).max(0))
    }
}

/// A [`RecordedLog`] partition: offsets as recorded; no position before the first record
/// unless the plan gives one (the recorded log may start anywhere).
impl<D: Clone + 'static> PartitionData for Recorded<D> {
    type Record = D;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn at(&self, i: usize) -> (i64, &D) {
        let (offset, record) = &self.0[i];
        (*offset, record)
    }

    fn index_of(&self, offset: i64) -> usize {
        self.0.partition_point(|(o, _)| *o < offset)
    }

    fn initial_position(&self, start: Option<i64>) -> Option<i64> {
        start
    }
}

/// Reads the owned partitions of an in-memory log, a fair share of each per turn.
#[derive(Debug)]
pub struct LogReader<P> {
    ids: Vec<PartitionId>,
    parts: Vec<LogPartition<P>>,
    turn: usize,
}

#[derive(Debug)]
struct LogPartition<P> {
    data: P,
    /// Index of the next record to read.
    next: usize,
    /// The offset after the last record read (or the plan's start).
    position: Option<i64>,
}

impl<P: PartitionData> LogReader<P> {
    /// A reader of the partitions (partition `p` at index `p`) owned by `worker` of `peers`,
    /// starting at the plan's offsets.
    pub fn new(
        topic: &str,
        partitions: &[P],
        worker: usize,
        peers: usize,
        plan: &ResumePlan,
    ) -> Self {
        let mut ids = Vec::new();
        let mut parts = Vec::new();
        for (i, data) in partitions.iter().enumerate() {
            if owned_by(i, worker, peers) {
                let id = PartitionId::new(topic, i as i32);
                let start = plan.start_offset(&id);
                parts.push(LogPartition {
                    next: start.map_or(0, |s| data.index_of(s)).min(data.len()),
                    position: data.initial_position(start),
                    data: data.clone(),
                });
                ids.push(id);
            }
        }
        LogReader {
            ids,
            parts,
            turn: 0,
        }
    }
}

impl<P: PartitionData> PartitionReader for LogReader<P> {
    type Record = P::Record;

    fn partitions(&self) -> &[PartitionId] {
        &self.ids
    }

    fn read(
        &mut self,
        budget: usize,
        emit: &mut dyn FnMut(usize, i64, P::Record),
    ) -> Result<ReadStatus, String> {
        let n = self.parts.len();
        let mut left = budget;
        let mut empty_rounds = 0;
        while left > 0 && empty_rounds < n {
            let i = self.turn % n;
            self.turn = self.turn.wrapping_add(1);
            let part = &mut self.parts[i];
            let take = (part.data.len() - part.next).min(left.div_ceil(n).max(1));
            if take == 0 {
                empty_rounds += 1;
                continue;
            }
            empty_rounds = 0;
            for j in part.next..part.next + take {
                let (offset, record) = part.data.at(j);
                emit(i, offset, record.clone());
                part.position = Some(offset + 1);
            }
            part.next += take;
            left -= take;
        }
        if self.parts.iter().all(|p| p.next >= p.data.len()) {
            Ok(ReadStatus::Exhausted)
        } else {
            Ok(ReadStatus::Busy)
        }
    }

    fn position(&self, partition: usize) -> Option<i64> {
        self.parts.get(partition).and_then(|p| p.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Checkpoint;
    use crate::resume::Rehydration;

    fn read_all(reader: &mut RecordedReader<&'static str>) -> Vec<(usize, i64, &'static str)> {
        let mut out = Vec::new();
        loop {
            let status = reader.read(2, &mut |i, o, r| out.push((i, o, r))).unwrap();
            if matches!(status, ReadStatus::Exhausted) {
                return out;
            }
        }
    }

    #[test]
    fn replays_original_offsets_and_positions() {
        let log = RecordedLog::new(
            "t",
            [
                (1, 7, "b7"),
                (0, 12, "a12"),
                (1, 3, "b3"),
                (0, 10, "a10"),
                (1, 9, "b9"),
            ],
        )
        .unwrap();
        assert_eq!(log.len(), 5);
        assert_eq!(log.partition_count(), 2);
        assert_eq!(log.ends(), vec![Some(13), Some(10)]);
        let mut reader = log.reader(0, 1, &ResumePlan::fresh());
        assert_eq!(reader.position(0), None);
        let mut got = read_all(&mut reader);
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, 10, "a10"),
                (0, 12, "a12"),
                (1, 3, "b3"),
                (1, 7, "b7"),
                (1, 9, "b9")
            ]
        );
        assert_eq!(reader.position(0), Some(13));
        assert_eq!(reader.position(1), Some(10));
    }

    #[test]
    fn resumes_from_a_checkpoint_between_offsets() {
        let log = RecordedLog::new("t", [(0, 10, "a10"), (0, 12, "a12"), (0, 15, "a15")]).unwrap();
        let mut positions = crate::position::Positions::default();
        positions.0.insert(PartitionId::new("t", 0), 11);
        let checkpoint = Checkpoint {
            epoch: 5,
            positions,
        };
        let plan =
            ResumePlan::from_checkpoints(vec![Some(checkpoint)], Rehydration::FromCheckpoint)
                .unwrap();
        let mut reader = log.reader(0, 1, &plan);
        assert_eq!(reader.position(0), Some(11));
        assert_eq!(read_all(&mut reader), vec![(0, 12, "a12"), (0, 15, "a15")]);
        assert_eq!(reader.position(0), Some(16));
    }

    #[test]
    fn refuses_duplicate_offsets_and_negative_partitions() {
        assert_eq!(
            RecordedLog::new("t", [(0, 4, "x"), (0, 4, "y")]).unwrap_err(),
            RecordedLogError::DuplicateOffset {
                topic: "t".into(),
                partition: 0,
                offset: 4
            }
        );
        assert!(matches!(
            RecordedLog::new("t", [(-1, 4, "x")]),
            Err(RecordedLogError::NegativePartition { .. })
        ));
    }
}
