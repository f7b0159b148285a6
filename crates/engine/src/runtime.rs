//! Running a pipeline: N worker threads in one process, or P processes × N threads.
//!
//! [`ClusterConfig`] describes the cluster; [`execute`] starts timely on it, lets the caller
//! build its dataflow on every worker, and then drives the workers until every dataflow is
//! complete (all sources exhausted and all epochs committed) or one of them failed.
//!
//! Worker failures are explicit: operators report errors through the [`WorkerContext`]
//! instead of panicking, every worker of the process then stops, and [`execute`] returns the
//! first error. (A panicking timely worker would leave its peers waiting forever; binaries
//! should also turn panics into process exits, see the `alluvium` CLI.)

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use timely::communication::Config as CommunicationConfig;
use timely::worker::Worker;
use timely::WorkerConfig;

use crate::error::EngineError;

/// The shape of the worker cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Worker threads per process.
    pub workers: usize,
    /// This process's index in `addresses` (0 when running alone).
    pub process: usize,
    /// `host:port` of every process; empty (or one entry) for a single process.
    pub addresses: Vec<String>,
    /// Merge effort arrangements spend per scheduling while the worker is idle and a merge is
    /// in progress (see [`crate::merging`]); `None` merges only as batches arrive.
    pub idle_merge_effort: Option<usize>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig::single(1)
    }
}

impl ClusterConfig {
    /// One process with `workers` threads.
    pub fn single(workers: usize) -> Self {
        ClusterConfig {
            workers,
            process: 0,
            addresses: Vec::new(),
            idle_merge_effort: Some(crate::merging::DEFAULT_IDLE_MERGE_EFFORT),
        }
    }

    /// `processes` processes on localhost, ports `base_port..base_port + processes`.
    pub fn localhost(workers: usize, processes: usize, process: usize, base_port: u16) -> Self {
        ClusterConfig {
            process,
            addresses: (0..processes)
                .map(|i| format!("127.0.0.1:{}", base_port as usize + i))
                .collect(),
            ..ClusterConfig::single(workers)
        }
    }

    /// Reads process addresses from a hostfile (one `host:port` per line, `#` comments).
    pub fn from_hostfile(
        path: &std::path::Path,
        workers: usize,
        process: usize,
    ) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let addresses = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(ClusterConfig {
            process,
            addresses,
            ..ClusterConfig::single(workers)
        })
    }

    /// Number of processes.
    pub fn processes(&self) -> usize {
        self.addresses.len().max(1)
    }

    /// Total number of workers across the cluster.
    pub fn total_workers(&self) -> usize {
        self.workers * self.processes()
    }

    /// Checks the configuration, naming the offending key.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.workers == 0 {
            return Err(EngineError::Config {
                key: "cluster.workers",
                reason: "must be at least 1".into(),
            });
        }
        if self.process >= self.processes() {
            return Err(EngineError::Config {
                key: "cluster.process",
                reason: format!(
                    "{} is not below the number of processes ({})",
                    self.process,
                    self.processes()
                ),
            });
        }
        for a in &self.addresses {
            if a.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(EngineError::Config {
                    key: "cluster.addresses",
                    reason: format!("`{a}` is not host:port"),
                });
            }
        }
        Ok(())
    }

    fn communication(&self) -> CommunicationConfig {
        if self.processes() > 1 {
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            CommunicationConfig::Process(self.workers)
        } else {
            CommunicationConfig::Thread
        }
    }
}

/// What every operator of a worker may need to know about where it runs, and how it reports
/// a failure that must stop the run.
#[derive(Clone, Debug)]
pub struct WorkerContext {
    /// Global index of this worker.
    pub index: usize,
    /// Number of workers in the cluster.
    pub peers: usize,
    failure: Arc<Mutex<Option<String>>>,
    /// Whether the cluster spans several processes (a failed process then parks, see
    /// [`execute`]).
    multi_process: bool,
}

impl WorkerContext {
    /// A context for worker `index` of `peers`, with its own failure slot (for tests and
    /// custom runtimes).
    pub fn new(index: usize, peers: usize) -> Self {
        WorkerContext {
            index,
            peers,
            failure: Arc::new(Mutex::new(None)),
            multi_process: false,
        }
    }

    /// Whether the cluster spans several processes. There a failed operator must keep the
    /// capabilities of the epochs it failed: released, they would let a peer process take
    /// those epochs for complete and commit them without this process's data (the failed
    /// process parks until it exits, so holding them blocks nothing of its own).
    pub fn is_multi_process(&self) -> bool {
        self.multi_process
    }

    /// Reports a failure: the run stops and [`execute`] returns it.
    pub fn fail(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::error!(worker = self.index, "{message}");
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(message);
        }
    }

    /// Whether some operator of this process failed.
    pub fn failed(&self) -> bool {
        self.failure.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    /// The first failure reported, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|s| s.clone())
    }
}

/// How long a parked worker sleeps at most before it rechecks for failures.
const PARK_LIMIT: Duration = Duration::from_millis(200);

/// Runs a pipeline on the cluster: `build` constructs the dataflow on every worker (it is
/// called once per worker thread), then the workers run until every dataflow completes.
///
/// Returns what `build` returned on each worker of this process, in worker order.
pub fn execute<R, F>(cluster: &ClusterConfig, build: F) -> Result<Vec<R>, EngineError>
where
    R: Send + 'static,
    F: Fn(&mut Worker, &WorkerContext) -> Result<R, String> + Send + Sync + 'static,
{
    cluster.validate()?;
    let failure = Arc::new(Mutex::new(None));
    let mut worker = WorkerConfig::default();
    crate::merging::idle_merging(&mut worker, cluster.idle_merge_effort);
    let config = timely::Config {
        communication: cluster.communication(),
        worker,
    };
    let multi_process = cluster.processes() > 1;
    // Whether a worker of this process failed: what the calling thread waits for besides
    // the workers' ends (see below why it may not simply join them).
    let progress = Arc::new((Mutex::new(false), Condvar::new()));
    let shared = failure.clone();
    let signal = progress.clone();
    let operator_times = crate::operator_time::enabled();
    let guards = timely::execute(config, move |worker| {
        crate::merging::reset_worker();
        let times = operator_times
            .then(|| crate::operator_time::OperatorTimes::record(worker))
            .flatten();
        let ctx = WorkerContext {
            index: worker.index(),
            peers: worker.peers(),
            failure: shared.clone(),
            multi_process,
        };
        let built = build(worker, &ctx);
        let result = match built {
            Ok(r) => {
                while !ctx.failed() && worker.step_or_park(Some(PARK_LIMIT)) {}
                (!ctx.failed()).then_some(r)
            }
            Err(e) => {
                ctx.fail(format!("building the dataflow: {e}"));
                None
            }
        };
        if let Some(times) = times {
            // Flush the events the loggers still buffer (arrangements hold loggers of their
            // own, so removing the registry's would not).
            if let Some(mut r) = worker.log_register() {
                r.flush();
            }
            times.emit(ctx.index);
        }
        let failed = result.is_none();
        if failed {
            let (lock, cvar) = &*signal;
            *lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
            cvar.notify_all();
        }
        if failed && multi_process {
            // Returning would drop this worker's dataflows, and with them its capabilities:
            // the peer processes would see every epoch this process held as complete, and
            // their sinks could commit epochs this process never finished. So the failed
            // process keeps its capabilities until it exits; the peers then see the
            // connection drop (not a clean shutdown) and fail too.
            loop {
                std::thread::park();
            }
        }
        result
    })
    .map_err(EngineError::Cluster)?;
    // A failed worker of a multi-process cluster parks: stop waiting at the first failure.
    let failed_early = multi_process && {
        let (lock, cvar) = &*progress;
        let mut failed = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if *failed {
                break true;
            }
            if guards.guards().iter().all(|g| g.is_finished()) {
                break false;
            }
            failed = cvar
                .wait_timeout(failed, PARK_LIMIT)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    };
    let mut results = Vec::new();
    if failed_early {
        // Joining would wait forever for the parked workers: leave them to the process exit.
        std::mem::forget(guards);
    } else {
        for (i, joined) in guards.join().into_iter().enumerate() {
            match joined {
                Ok(Some(r)) => results.push(r),
                Ok(None) => {}
                Err(panic) => {
                    return Err(EngineError::Worker {
                        worker: i,
                        message: format!("panicked: {panic}"),
                    })
                }
            }
        }
    }
    if let Some(message) = failure.lock().ok().and_then(|s| s.clone()) {
        return Err(EngineError::Worker {
            worker: cluster.process * cluster.workers,
            message,
        });
    }
    Ok(results)
}

/// `value` as worker 0 has it, on every worker of the cluster: worker 0 sends it through a
/// small dataflow of its own, and each worker waits for it. Pass `None` where the value is not
/// known (other processes). Used so that every process of a cluster runs the one resume plan
/// that process 0 built after claiming the sinks, instead of reading the checkpoints itself
/// at a slightly different moment.
pub fn from_worker_zero<T>(worker: &mut Worker, value: Option<T>) -> Result<T, String>
where
    T: timely::ExchangeData + Clone,
{
    use std::cell::RefCell;
    use std::rc::Rc;
    use timely::dataflow::operators::vec::{Broadcast, Input};
    use timely::dataflow::operators::{Inspect, Probe};
    let received: Rc<RefCell<Option<T>>> = Rc::new(RefCell::new(None));
    let store = received.clone();
    let probe = timely::dataflow::ProbeHandle::new();
    let mut input = worker.dataflow::<u64, _, _>(|scope| {
        let (input, stream) = scope.new_input::<T>();
        stream
            .broadcast()
            .inspect(move |v: &T| *store.borrow_mut() = Some(v.clone()))
            .probe_with(&probe);
        input
    });
    if worker.index() == 0 {
        let value = value.ok_or("worker 0 has no value to send")?;
        input.send(value);
    }
    input.advance_to(1);
    drop(input);
    while probe.less_than(&1) {
        worker.step_or_park(Some(PARK_LIMIT));
    }
    received
        .take()
        .ok_or_else(|| "worker 0 sent nothing".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cluster_config_names_the_key() {
        let mut c = ClusterConfig::localhost(1, 2, 0, 4000);
        c.process = 2;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.process"), "{err}");
        let mut c = ClusterConfig::single(0);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cluster.workers"));
        c.workers = 1;
        c.addresses = vec!["nohost".into(), "x:1".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cluster.addresses"));
    }

    #[test]
    fn hostfile_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "# cluster\n127.0.0.1:2101\n\n127.0.0.1:2102 # second\n",
        )
        .unwrap();
        let c = ClusterConfig::from_hostfile(&path, 2, 1).unwrap();
        assert_eq!(c.addresses, vec!["127.0.0.1:2101", "127.0.0.1:2102"]);
        assert_eq!(c.total_workers(), 4);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn every_worker_gets_worker_zeros_value() {
        // Workers other than 0 pass their own (or none): all end with worker 0's.
        let seen = execute(&ClusterConfig::single(3), |worker, ctx| {
            let mine = (ctx.index != 2).then(|| format!("plan of worker {}", ctx.index));
            from_worker_zero(worker, mine)
        })
        .unwrap();
        assert_eq!(seen, vec!["plan of worker 0".to_string(); 3]);
    }
}
