//! Progress of long runs (backfills): an indicatif bar with rate and ETA on a terminal,
//! plain log lines every few seconds otherwise (CI, systemd, files).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alluvium_engine::metrics::engine_metrics;

/// A running progress report of records read against a known total.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Reports `what` until [`Progress::finish`]: the records the engine's sources read,
    /// against `total` (the topics' end offsets at start; raised to what was read when a
    /// broker under-reports them).
    pub fn start(what: &'static str, total: u64) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || report(what, total, &stop))
            .ok();
        Progress { done, thread }
    }

    /// Stops reporting, with a last report.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn report(what: &'static str, total: u64, stop: &AtomicBool) {
    let read = || engine_metrics().records_read.get();
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({per_sec}, ETA {eta})",
        ) {
            bar.set_style(style);
        }
        bar.set_message(what);
        let show = |bar: &indicatif::ProgressBar| {
            let done = read();
            bar.set_length(total.max(done));
            bar.set_position(done);
        };
        while !stop.load(Ordering::Relaxed) {
            show(&bar);
            std::thread::sleep(Duration::from_millis(200));
        }
        show(&bar);
        bar.finish();
    } else {
        let log = |done: u64| {
            // Some brokers under-report end offsets (docs/testing.md): never below what was read.
            let total = total.max(done);
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 {
                total.saturating_sub(done) as f64 / rate
            } else {
                f64::INFINITY
            };
            let percent = if total == 0 {
                100.0
            } else {
                100.0 * done as f64 / total as f64
            };
            tracing::info!(
                done,
                total,
                percent = format!("{percent:.1}"),
                rate = format!("{rate:.0}/s"),
                eta_s = format!("{eta:.0}"),
                "{what} progress"
            );
        };
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if last.elapsed() >= Duration::from_secs(5) {
                log(read());
                last = Instant::now();
            }
        }
        log(read());
    }
}
