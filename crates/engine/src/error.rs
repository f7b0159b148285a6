//! Errors of the engine itself (configuration, cluster start-up, worker failure).

use thiserror::Error;

/// An error raised by the engine runtime.
#[derive(Debug, Error)]
pub enum EngineError {
    /// A configuration value is invalid; `key` names the setting.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The configuration key (e.g. `cluster.process`).
        key: &'static str,
        /// Why the value was rejected.
        reason: String,
    },
    /// The timely cluster could not be started (bad addresses, peers unreachable, ...).
    #[error("could not start the worker cluster: {0}")]
    Cluster(String),
    /// A worker stopped with an error while running the pipeline.
    #[error("worker {worker} failed: {message}")]
    Worker {
        /// Global index of the failed worker.
        worker: usize,
        /// The failure, with its context chain.
        message: String,
    },
    /// The sinks' checkpoints do not come from one history (see [`crate::resume`]).
    #[error("the sinks' checkpoints disagree: {0}")]
    Checkpoints(String),
    /// Reading a file named in the configuration failed.
    #[error("could not read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}
