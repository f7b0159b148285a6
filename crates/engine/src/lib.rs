//! # alluvium-engine
//!
//! The dataflow runtime of Alluvium: a thin, opinionated layer over
//! [timely dataflow](https://docs.rs/timely) and
//! [differential dataflow](https://docs.rs/differential-dataflow) that turns partitioned,
//! replayable logs (Kafka topics, in-memory vectors, ...) into exactly-once committed tables.
//!
//! ## The idea
//!
//! Every record that enters a pipeline is stamped with an **ingestion epoch** ([`Epoch`]), the
//! timestamp of the dataflow. Sources close epochs by size or time ([`EpochPolicy`]) and, when
//! they close one, report how far they have read each partition ([`Positions`]). Differential
//! operators turn the input into changes of derived collections, `(row, epoch, diff)`.
//!
//! A [`Sink`] receives, per epoch, the consolidated changes of one collection. Each worker
//! *stages* its share ([`SinkWriter`]); one *committer* ([`SinkCommitter`], on worker 0)
//! commits the staged pieces of an epoch together with the source positions it covers,
//! once the input frontier has passed that epoch — so every epoch is committed once,
//! atomically, and the sink's own durable state says how far the sources were read
//! ([`Checkpoint`]).
//!
//! On restart the engine asks every sink for its checkpoint and builds a [`ResumePlan`]:
//! sources replay history up to the checkpoints as *replay epochs* (numbered like the committed
//! ones), which rebuilds the dataflow's state, and every sink skips the epochs it already
//! committed. The result: the same inputs produce the same tables whatever the epoch
//! boundaries, worker count, crashes or replays.
//!
//! ## The pieces
//!
//! - [`epoch`]: epochs and the policy that closes them.
//! - [`position`]: partitions, offsets, checkpoints.
//! - [`resume`]: the plan that turns sink checkpoints into replay epochs.
//! - [`sink`]: the two-phase sink traits and the frontier-driven commit operator.
//! - [`sinks`]: ready-made sinks (a durable file sink).
//! - [`source`]: a partitioned in-memory source, the reference implementation of the source
//!   contract (the Kafka source lives in `alluvium-connectors`).
//! - [`runtime`]: running a pipeline on N threads × P processes.
//! - [`latest`]: the greatest value per key of an insert-only collection, in O(keys) memory.
//! - [`left_join`]: a left outer join that arranges its large side once.
//! - [`shared`]: large records shared between collections, compared by identity first.
//! - [`demo`]: the demo graph (count and sum per key) used by the CLI demo, benches and tests.

#![warn(missing_docs)]

pub mod barrier;
pub mod demo;
pub mod epoch;
pub mod error;
pub mod failpoint;
pub mod latest;
pub mod left_join;
pub mod merging;
pub mod metrics;
pub mod operator_time;
pub mod position;
pub mod quantiles;
pub mod recorded;
pub mod resume;
pub mod runtime;
pub mod shared;
pub mod sink;
pub mod sinks;
pub mod source;

pub use epoch::{Epoch, EpochClock, EpochPolicy, RunMode};
pub use error::EngineError;
pub use position::{Checkpoint, PartitionId, PositionUpdate, Positions};
pub use recorded::{RecordedLog, ReplayLog};
pub use resume::{Rehydration, ResumePlan};
pub use runtime::{execute, ClusterConfig, WorkerContext};
pub use sink::{
    appended_epochs, commit_changes, commit_sink, consolidate_epochs, EpochChanges, EpochToCommit,
    Sink, SinkCommitter, SinkError, SinkWriter,
};
pub use source::{
    partitioned_source, MemoryLog, PartitionReader, ReadStatus, SourceContext, SourceOptions,
};

/// Re-exports of the dataflow crates, so pipelines use the exact versions the engine uses.
pub mod dataflow {
    pub use differential_dataflow;
    pub use timely;
}
