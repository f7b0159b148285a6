//! Ingestion epochs: the timestamps of every Alluvium dataflow.
//!
//! An epoch is a `u64`. Live epochs are numbered by wall-clock milliseconds (strictly
//! increasing per worker, `max(previous + 1, now_ms)`), so that workers which close epochs
//! independently — by size or by time — still agree roughly on the numbering and an idle
//! worker never holds the others back for long. Replay epochs (see [`crate::resume`]) reuse
//! the numbers of committed epochs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The dataflow timestamp: an ingestion epoch.
pub type Epoch = u64;

/// When a source closes the epoch it is filling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochPolicy {
    /// Close the epoch once this many records entered it on one worker.
    pub max_records: usize,
    /// Close the epoch once it has been open this long (also closes empty epochs, so that
    /// idle workers keep the frontier moving).
    pub max_duration: Duration,
    /// Stop reading while this many closed epochs are not yet committed (backpressure).
    pub max_inflight_epochs: usize,
}

impl Default for EpochPolicy {
    fn default() -> Self {
        EpochPolicy {
            max_records: 100_000,
            max_duration: Duration::from_millis(250),
            max_inflight_epochs: 4,
        }
    }
}

/// How long a pipeline runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Run until stopped.
    Continuous,
    /// Drain every partition to its end offset as of start (or until no record arrived for
    /// `idle_timeout`, when set), commit, and stop.
    UntilIdle {
        /// Also stop once no record arrived for this long.
        idle_timeout: Option<Duration>,
    },
}

/// Milliseconds since the Unix epoch, the basis of live epoch numbers.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch (the unit of `_ingested_at` columns).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The per-worker state machine that decides when a source closes its epoch.
#[derive(Debug)]
pub struct EpochClock {
    policy: EpochPolicy,
    current: Epoch,
    records: usize,
    opened: Instant,
}

impl EpochClock {
    /// A clock whose first live epoch is at least `first`.
    pub fn new(policy: EpochPolicy, first: Epoch) -> Self {
        EpochClock {
            policy,
            current: first.max(now_millis()),
            records: 0,
            opened: Instant::now(),
        }
    }

    /// The epoch being filled.
    pub fn current(&self) -> Epoch {
        self.current
    }

    /// The policy in force.
    pub fn policy(&self) -> &EpochPolicy {
        &self.policy
    }

    /// Counts `n` records into the current epoch.
    pub fn record(&mut self, n: usize) {
        self.records += n;
    }

    /// Records in the current epoch so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Whether the current epoch is full (by size) or old enough (by time).
    pub fn should_close(&self) -> bool {
        self.records >= self.policy.max_records || self.opened.elapsed() >= self.policy.max_duration
    }

    /// Time left until the current epoch closes by time.
    pub fn time_left(&self) -> Duration {
        self.policy
            .max_duration
            .saturating_sub(self.opened.elapsed())
    }

    /// Closes the current epoch and opens the next; returns the closed epoch.
    pub fn advance(&mut self) -> Epoch {
        let closed = self.current;
        self.current = (closed + 1).max(now_millis());
        self.records = 0;
        self.opened = Instant::now();
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_strictly_increase_and_close_by_size() {
        let policy = EpochPolicy {
            max_records: 3,
            max_duration: Duration::from_secs(3600),
            max_inflight_epochs: 2,
        };
        let far_future = now_millis() + 1_000_000;
        let mut clock = EpochClock::new(policy, far_future);
        assert_eq!(clock.current(), far_future);
        clock.record(2);
        assert!(!clock.should_close());
        clock.record(1);
        assert!(clock.should_close());
        assert_eq!(clock.advance(), far_future);
        assert_eq!(clock.current(), far_future + 1);
        assert_eq!(clock.records(), 0);
    }

    #[test]
    fn closes_by_time() {
        let policy = EpochPolicy {
            max_records: usize::MAX,
            max_duration: Duration::ZERO,
            max_inflight_epochs: 2,
        };
        let clock = EpochClock::new(policy, 0);
        assert!(clock.should_close());
    }
}
