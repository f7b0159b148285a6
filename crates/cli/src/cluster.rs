//! Cluster and epoch flags shared by the commands that run a pipeline.

use std::path::PathBuf;
use std::time::Duration;

use alluvium_engine::{ClusterConfig, EpochPolicy, RunMode};
use anyhow::{Context, Result};
use clap::Args;

/// Where the workers run.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long, default_value_t = 1, env = "ALLUVIUM_WORKERS")]
    pub workers: usize,
    /// Number of processes in the cluster (addresses 127.0.0.1:BASE_PORT+i unless --hostfile).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index in the cluster.
    #[arg(long, default_value_t = 0)]
    pub process: usize,
    /// File with one `host:port` per process.
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
    /// First port of the localhost cluster when no hostfile is given.
    #[arg(long, default_value_t = 2101)]
    pub base_port: u16,
    /// Merge effort (updates per scheduling) the arrangements spend while the worker is idle
    /// and a merge is in progress; 0 turns idle merging off (merges then progress only as
    /// new data arrives). See docs/operations.md.
    #[arg(long, default_value_t = alluvium_engine::merging::DEFAULT_IDLE_MERGE_EFFORT)]
    pub idle_merge_effort: usize,
}

impl ClusterArgs {
    /// The engine's cluster configuration.
    pub fn config(&self) -> Result<ClusterConfig> {
        let c = match &self.hostfile {
            Some(path) => ClusterConfig::from_hostfile(path, self.workers, self.process)
                .with_context(|| format!("reading hostfile {}", path.display()))?,
            None if self.processes > 1 => {
                ClusterConfig::localhost(self.workers, self.processes, self.process, self.base_port)
            }
            None => ClusterConfig::single(self.workers),
        };
        let mut c = c;
        c.idle_merge_effort = Some(self.idle_merge_effort).filter(|&e| e > 0);
        c.validate()?;
        Ok(c)
    }
}

/// When epochs close and when the run ends.
#[derive(Debug, Args, Clone)]
pub struct EpochArgs {
    /// Close an epoch after this many records per worker.
    #[arg(long, default_value_t = 100_000)]
    pub epoch_records: usize,
    /// Close an epoch after this many milliseconds.
    #[arg(long, default_value_t = 250)]
    pub epoch_ms: u64,
    /// Stop reading while this many closed epochs are uncommitted.
    #[arg(long, default_value_t = 4)]
    pub max_inflight_epochs: usize,
    /// Drain every partition to its end offset as of start, commit, and exit.
    #[arg(long)]
    pub until_idle: bool,
    /// With --until-idle: also stop after this many milliseconds without a new record.
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
}

impl EpochArgs {
    /// The epoch policy.
    pub fn policy(&self) -> Result<EpochPolicy> {
        anyhow::ensure!(
            self.epoch_records > 0,
            "invalid configuration `--epoch-records`: must be at least 1"
        );
        anyhow::ensure!(
            self.epoch_ms > 0,
            "invalid configuration `--epoch-ms`: must be at least 1"
        );
        Ok(EpochPolicy {
            max_records: self.epoch_records,
            max_duration: Duration::from_millis(self.epoch_ms),
            max_inflight_epochs: self.max_inflight_epochs.max(1),
        })
    }

    /// The run mode.
    pub fn mode(&self) -> RunMode {
        if self.until_idle {
            RunMode::UntilIdle {
                idle_timeout: self.idle_timeout_ms.map(Duration::from_millis),
            }
        } else {
            RunMode::Continuous
        }
    }
}
