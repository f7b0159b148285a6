//! Fault injection for crash tests.
//!
//! Random `kill -9`s find most crash windows, but the narrow ones (between two sinks'
//! commits of one epoch, or after data files are written and before they are committed) need
//! aiming. Set `ALLUVIUM_FAILPOINT=<point>:<sink name substring>:<n>` and the process aborts
//! (no unwinding, no flushing — like SIGKILL) the `n`-th time it passes `<point>` for a sink
//! whose name contains the substring. Points:
//!
//! - `after_stage`: a writer staged an epoch (its data files are written, not committed);
//! - `fail_stage`: instead of aborting, a writer reports a failure for its `n`-th epoch, as
//!   if it could not write it (the run stops through the worker context, not a crash);
//! - `after_commit`: a committer committed an epoch;
//! - `hang_before_commit`: instead of aborting, the committer stops for good just before its
//!   `n`-th commit, while the other sinks go on — so a test can wait until they are ahead
//!   and then kill the process: a crash between two sinks' commits of the same epoch.
//!
//! Unset (the normal case) costs one relaxed atomic load per epoch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Failpoint {
    point: String,
    sink: String,
    nth: u64,
    hits: AtomicU64,
}

fn configured() -> Option<&'static Failpoint> {
    static CONFIG: OnceLock<Option<Failpoint>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let value = std::env::var("ALLUVIUM_FAILPOINT").ok()?;
            // The sink part may itself hold colons: point first, count last.
            let (point, rest) = value.split_once(':')?;
            let (sink, nth) = rest.rsplit_once(':')?;
            let (point, sink, nth) = (point.to_string(), sink.to_string(), nth.parse().ok()?);
            Some(Failpoint {
                point,
                sink,
                nth,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

fn reached(point: &str, sink: &str) -> bool {
    let Some(f) = configured() else { return false };
    f.point == point
        && sink.contains(&f.sink)
        && f.hits.fetch_add(1, Ordering::Relaxed) + 1 == f.nth
}

/// Passes failpoint `point` for sink `sink`: aborts the process if this is the configured
/// `n`-th pass.
pub fn hit(point: &str, sink: &str) {
    if reached(point, sink) {
        eprintln!("failpoint {point} for sink {sink}: aborting");
        std::process::abort();
    }
}

/// Passes failpoint `point` for sink `sink`: whether the caller must fail here (the
/// configured `n`-th pass).
pub fn fails(point: &str, sink: &str) -> bool {
    let fail = reached(point, sink);
    if fail {
        eprintln!("failpoint {point} for sink {sink}: failing");
    }
    fail
}

/// Passes failpoint `point` for sink `sink`: blocks the calling thread forever if this is the
/// configured `n`-th pass.
pub fn hang(point: &str, sink: &str) {
    if reached(point, sink) {
        eprintln!("failpoint {point} for sink {sink}: hanging");
        loop {
            std::thread::park();
        }
    }
}
