//! Source positions: how far each partition of a replayable log has been read.
//!
//! A position is the offset of the *next* record to read, so a partition that was read up to
//! and including offset 41 has position 42. Positions are what sinks store with every commit
//! ([`Checkpoint`]), and what the engine resumes from.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::epoch::Epoch;

/// One partition of a source: a topic (or any named log) and a partition number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId {
    /// The topic or log name.
    pub topic: String,
    /// The partition number within the topic.
    pub partition: i32,
}

impl PartitionId {
    /// A partition of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        PartitionId {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A source's report that `partition` has been read up to (excluding) `offset`.
pub type PositionUpdate = (PartitionId, i64);

/// The next offset to read, per partition.
///
/// Serialised as a list of `{topic, partition, offset}` so that it fits any format
/// (JSON objects only take string keys).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<PositionEntry>", from = "Vec<PositionEntry>")]
pub struct Positions(pub BTreeMap<PartitionId, i64>);

/// One entry of serialised [`Positions`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PositionEntry {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset to read.
    pub offset: i64,
}

impl From<Positions> for Vec<PositionEntry> {
    fn from(p: Positions) -> Self {
        p.0.into_iter()
            .map(|(id, offset)| PositionEntry {
                topic: id.topic,
                partition: id.partition,
                offset,
            })
            .collect()
    }
}

impl From<Vec<PositionEntry>> for Positions {
    fn from(entries: Vec<PositionEntry>) -> Self {
        let mut p = Positions::new();
        for e in entries {
            p.advance(PartitionId::new(e.topic, e.partition), e.offset);
        }
        p
    }
}

impl Positions {
    /// No partition read yet.
    pub fn new() -> Self {
        Positions::default()
    }

    /// The next offset to read of `partition`, if it was ever read.
    pub fn get(&self, partition: &PartitionId) -> Option<i64> {
        self.0.get(partition).copied()
    }

    /// Raises the position of `partition` to `offset` (positions never go back).
    pub fn advance(&mut self, partition: PartitionId, offset: i64) {
        let entry = self.0.entry(partition).or_insert(offset);
        if *entry < offset {
            *entry = offset;
        }
    }

    /// Merges another set of positions, keeping the furthest of each partition.
    pub fn merge(&mut self, other: &Positions) {
        for (p, o) in &other.0 {
            self.advance(p.clone(), *o);
        }
    }

    /// Iterates over `(partition, next offset)`.
    pub fn iter(&self) -> impl Iterator<Item = (&PartitionId, i64)> {
        self.0.iter().map(|(p, o)| (p, *o))
    }

    /// Whether no partition is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a sink has durably committed: the last epoch, and the source positions it covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last committed epoch.
    pub epoch: Epoch,
    /// The positions the sources had reached at the end of that epoch.
    pub positions: Positions,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_only_move_forward() {
        let p = PartitionId::new("t", 0);
        let mut pos = Positions::new();
        pos.advance(p.clone(), 10);
        pos.advance(p.clone(), 5);
        assert_eq!(pos.get(&p), Some(10));
        let mut other = Positions::new();
        other.advance(p.clone(), 12);
        other.advance(PartitionId::new("t", 1), 3);
        pos.merge(&other);
        assert_eq!(pos.get(&p), Some(12));
        assert_eq!(pos.get(&PartitionId::new("t", 1)), Some(3));
        assert_eq!(p.to_string(), "t[0]");
    }
}
