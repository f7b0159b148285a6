//! A sink that keeps nothing: counts committed changes. For benchmarks and dry runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::epoch::Epoch;
use crate::position::{Checkpoint, Positions};
use crate::sink::{Sink, SinkCommitter, SinkError, SinkWriter};

/// Counts the changes and epochs it is asked to commit; never has a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct NullSink {
    changes: Arc<AtomicU64>,
    epochs: Arc<AtomicU64>,
}

impl NullSink {
    /// A new counter pair.
    pub fn new() -> Self {
        NullSink::default()
    }
    /// Changes staged so far, over all workers of this process.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }
    /// Epochs committed so far.
    pub fn epochs(&self) -> u64 {
        self.epochs.load(Ordering::Relaxed)
    }
}

impl<D: 'static> Sink<D> for NullSink {
    type Staged = u64;
    type Writer = NullSink;
    type Committer = NullSink;

    fn name(&self) -> String {
        "null".into()
    }
    fn checkpoint(&self) -> Result<Option<Checkpoint>, SinkError> {
        Ok(None)
    }
    fn writer(&self, _worker: usize) -> Result<NullSink, SinkError> {
        Ok(self.clone())
    }
    fn committer(&self) -> Result<NullSink, SinkError> {
        Ok(self.clone())
    }
}

impl<D: 'static> SinkWriter<D> for NullSink {
    type Staged = u64;
    fn stage(&mut self, _epoch: Epoch, updates: &[(D, isize)]) -> Result<Option<u64>, SinkError> {
        self.changes
            .fetch_add(updates.len() as u64, Ordering::Relaxed);
        Ok(Some(updates.len() as u64))
    }
}

impl SinkCommitter for NullSink {
    type Staged = u64;
    fn commit(
        &mut self,
        _epoch: Epoch,
        _staged: &[u64],
        _positions: &Positions,
    ) -> Result<(), SinkError> {
        self.epochs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
