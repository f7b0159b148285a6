//! Time spent in each operator, from timely's scheduling log.
//!
//! The first question of any tuning is where the time goes, and a CPU profile answers it
//! badly for a dataflow: the generic closures of a dozen operators inline into the same
//! sort, merge and hash functions, so perf names functions, not operators. Timely already
//! logs every start and stop of every operator's scheduling; this module sums them per
//! operator and reports a table when the worker ends.
//!
//! Time is *exclusive*: a region's (subgraph's) own time excludes the operators scheduled
//! inside it, so the column adds up to the worker's busy time.
//!
//! Memory is the other question, and differential's own log answers part of it: every batch
//! an arrangement (its spine) adds, merges and drops is logged with its number of updates.
//! The report adds, per arrangement, the most updates its batches held at once — which
//! arrangement grows with the input, and by how much.
//!
//! Set `ALLUVIUM_OPERATOR_TIMES=1` to have [`crate::execute`] record and report it. The cost
//! is two log events per scheduling, a few percent on small epochs; off by default.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// The environment variable that turns the report on in [`crate::execute`].
pub const ENV: &str = "ALLUVIUM_OPERATOR_TIMES";

/// How many operators the report lists (the rest are summed in one line).
const REPORT_ROWS: usize = 30;

/// Whether [`ENV`] asks for the report (`1` or `true`).
pub fn enabled() -> bool {
    std::env::var(ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// One operator's share of a worker's time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorTime {
    /// Worker-unique operator id.
    pub id: usize,
    /// The operator's address (scope path) in the worker's dataflows.
    pub addr: Vec<usize>,
    /// The name the operator was built with.
    pub name: String,
    /// How many times the worker scheduled it.
    pub schedulings: u64,
    /// Time spent in it, excluding operators scheduled inside it.
    pub busy: Duration,
    /// For an arrangement: the updates its batches hold at the end and at most.
    pub held: Option<Held>,
}

/// The updates an arrangement's batches hold, from differential's batch, merge and drop
/// events (they balance: see `differential_dataflow::logging::DifferentialEvent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Updates held now.
    pub now: i64,
    /// The most updates held at once.
    pub peak: i64,
}

impl Held {
    fn add(&mut self, n: i64) {
        self.now += n;
        self.peak = self.peak.max(self.now);
    }
}

/// One open scheduling: which operator, when it started, and how long the operators
/// scheduled inside it took (subtracted from its own time at its stop).
struct Open {
    id: usize,
    start: Duration,
    inner: Duration,
}

#[derive(Default)]
struct Tally {
    names: HashMap<usize, (Vec<usize>, String)>,
    totals: HashMap<usize, (u64, Duration)>,
    open: Vec<Open>,
    held: HashMap<usize, Held>,
}

impl Tally {
    fn observe(&mut self, at: Duration, event: &TimelyEvent) {
        match event {
            TimelyEvent::Operates(op) => {
                self.names.insert(op.id, (op.addr.clone(), op.name.clone()));
            }
            TimelyEvent::Schedule(s) => match s.start_stop {
                StartStop::Start => self.open.push(Open {
                    id: s.id,
                    start: at,
                    inner: Duration::ZERO,
                }),
                StartStop::Stop => {
                    // A stop without its start (the logger was registered mid-scheduling)
                    // is skipped rather than guessed at.
                    let Some(open) = self.open.pop() else { return };
                    let elapsed = at.saturating_sub(open.start);
                    let total = self.totals.entry(open.id).or_default();
                    total.0 += 1;
                    total.1 += elapsed.saturating_sub(open.inner);
                    if let Some(parent) = self.open.last_mut() {
                        parent.inner += elapsed;
                    }
                }
            },
            _ => {}
        }
    }

    fn observe_arrangement(&mut self, event: &DifferentialEvent) {
        let (operator, change) = match event {
            DifferentialEvent::Batch(b) => (b.operator, b.length as i64),
            DifferentialEvent::Merge(m) => match m.complete {
                Some(merged) => (
                    m.operator,
                    merged as i64 - m.length1 as i64 - m.length2 as i64,
                ),
                None => return,
            },
            DifferentialEvent::Drop(d) => (d.operator, -(d.length as i64)),
            _ => return,
        };
        self.held.entry(operator).or_default().add(change);
    }
}

/// A worker's operator times, recorded from the moment [`OperatorTimes::record`] was called.
#[derive(Clone)]
pub struct OperatorTimes {
    tally: Rc<RefCell<Tally>>,
}

impl OperatorTimes {
    /// Starts recording on `worker`. Call it before building the dataflows, so that their
    /// operators' names are known; `None` if the worker has no log registry.
    pub fn record(worker: &mut Worker) -> Option<OperatorTimes> {
        let tally = Rc::new(RefCell::new(Tally::default()));
        let mut register = worker.log_register()?;
        let sink = tally.clone();
        register.insert::<TimelyEventBuilder, _>("timely", move |_, events| {
            if let Some(events) = events {
                let mut tally = sink.borrow_mut();
                for (at, event) in events.iter() {
                    tally.observe(*at, event);
                }
            }
        });
        let sink = tally.clone();
        register.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_, events| {
            if let Some(events) = events {
                let mut tally = sink.borrow_mut();
                for (_, event) in events.iter() {
                    tally.observe_arrangement(event);
                }
            }
        });
        Some(OperatorTimes { tally })
    }

    /// Every operator scheduled so far, busiest first. Log events are buffered: call it
    /// after the worker's last step (when the worker flushes its logs) for complete figures.
    pub fn snapshot(&self) -> Vec<OperatorTime> {
        let tally = self.tally.borrow();
        let mut times: Vec<OperatorTime> = tally
            .totals
            .iter()
            .map(|(&id, &(schedulings, busy))| {
                let (addr, name) = tally
                    .names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| (Vec::new(), format!("operator {id}")));
                OperatorTime {
                    id,
                    addr,
                    name,
                    schedulings,
                    busy,
                    held: tally.held.get(&id).copied(),
                }
            })
            .collect();
        times.sort_by(|a, b| b.busy.cmp(&a.busy).then(a.id.cmp(&b.id)));
        times
    }

    /// The report: one line per operator (busiest first), with its share of the worker's
    /// total busy time.
    pub fn report(&self, worker: usize) -> String {
        let times = self.snapshot();
        let total: Duration = times.iter().map(|t| t.busy).sum();
        let share = |d: Duration| {
            if total.is_zero() {
                0.0
            } else {
                100.0 * d.as_secs_f64() / total.as_secs_f64()
            }
        };
        let mut out = format!(
            "worker {worker}: operator times ({:.3} s busy)\n{:>7} {:>10} {:>10}  operator\n",
            total.as_secs_f64(),
            "share",
            "seconds",
            "scheduled"
        );
        for t in times.iter().take(REPORT_ROWS) {
            out.push_str(&format!(
                "{:>6.1}% {:>10.3} {:>10}  {} {:?}\n",
                share(t.busy),
                t.busy.as_secs_f64(),
                t.schedulings,
                t.name,
                t.addr
            ));
        }
        if times.len() > REPORT_ROWS {
            let rest: Duration = times.iter().skip(REPORT_ROWS).map(|t| t.busy).sum();
            out.push_str(&format!(
                "{:>6.1}% {:>10.3} {:>10}  ({} more operators)\n",
                share(rest),
                rest.as_secs_f64(),
                "",
                times.len() - REPORT_ROWS
            ));
        }
        // Peaks, not the updates held at the end: a worker reports after its dataflows are
        // done, when their arrangements have dropped their batches.
        let mut arranged: Vec<(&OperatorTime, Held)> =
            times.iter().filter_map(|t| Some((t, t.held?))).collect();
        arranged.sort_by(|a, b| b.1.peak.cmp(&a.1.peak).then(a.0.id.cmp(&b.0.id)));
        let peaks: i64 = arranged.iter().map(|(_, h)| h.peak).sum();
        out.push_str(&format!(
            "worker {worker}: arrangements, most updates held at once (sum {peaks})\n"
        ));
        for (t, h) in arranged.iter().filter(|(_, h)| h.peak > 0) {
            out.push_str(&format!("{:>11}  {} {:?}\n", h.peak, t.name, t.addr));
        }
        out
    }

    /// Writes [`OperatorTimes::report`] as an `info` event, or to stderr when no tracing
    /// subscriber is installed (benches, tests).
    pub fn emit(&self, worker: usize) {
        let report = self.report(worker);
        if tracing::dispatcher::has_been_set() {
            tracing::info!("{report}");
        } else {
            eprint!("{report}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::vec::Map;
    use timely::dataflow::operators::{Inspect, ToStream};

    /// What `f` returns on the one worker of a single-thread timely run.
    fn on_one_worker<T: Send + 'static>(f: impl Fn(&mut Worker) -> T + Send + Sync + 'static) -> T {
        timely::execute(timely::Config::thread(), f)
            .expect("execute")
            .join()
            .into_iter()
            .next()
            .expect("one worker")
            .expect("the worker")
    }

    #[test]
    fn busy_operators_are_named_and_their_times_exclusive() {
        let times = on_one_worker(|worker| {
            let times = OperatorTimes::record(worker).expect("log registry");
            worker.dataflow::<u64, _, _>(|scope| {
                (0..20_000u64)
                    .to_stream(scope)
                    .map(|x| {
                        // Enough work per record to stand out from the other operators.
                        (0..200u64).fold(x, |a, b| a.wrapping_mul(31).wrapping_add(b))
                    })
                    .inspect(|_| {});
            });
            while worker.step() {}
            // Dropping the registry's loggers flushes what they buffered.
            worker.log_register().map(|mut r| r.remove("timely"));
            times.snapshot()
        });
        let busiest = &times[0];
        // timely builds `map` as a flat map.
        assert_eq!(busiest.name, "FlatMap", "{times:?}");
        assert!(busiest.schedulings > 0);
        // Exclusive times: the dataflow's subgraph does not also count its operators' time.
        let total: Duration = times.iter().map(|t| t.busy).sum();
        assert!(busiest.busy * 2 > total, "{times:?}");
        assert!(times.iter().any(|t| t.name == "Inspect"));
    }

    #[test]
    fn arrangements_report_the_updates_they_hold() {
        use differential_dataflow::input::Input;
        use timely::dataflow::operators::Probe;
        let (times, report) = on_one_worker(|worker| {
            let times = OperatorTimes::record(worker).expect("log registry");
            let probe = timely::dataflow::ProbeHandle::new();
            // The trace is kept, as a join or reduce keeps it: a trace nobody holds is not
            // filled.
            let (mut input, _trace) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, values) = scope.new_collection::<u64, isize>();
                let arranged = values.arrange_by_self();
                arranged.stream.probe_with(&probe);
                (input, arranged.trace)
            });
            // 1,000 distinct values, then 400 of them retracted: the arrangement's batches
            // hold 1,400 updates until a merge nets them (it may or may not have by the end).
            for v in 0..1_000u64 {
                input.insert(v);
            }
            input.advance_to(1);
            input.flush();
            while probe.less_than(&1) {
                worker.step();
            }
            for v in 0..400u64 {
                input.remove(v);
            }
            input.advance_to(2);
            input.flush();
            while probe.less_than(&2) {
                worker.step();
            }
            // The arrangement holds a logger of its own: flush what it buffered.
            if let Some(mut r) = worker.log_register() {
                r.flush();
            }
            (times.snapshot(), times.report(0))
        });
        let held: Vec<Held> = times.iter().filter_map(|t| t.held).collect();
        assert_eq!(held.len(), 1, "{times:?}");
        assert!(
            held[0].peak >= 1_400 && (600..=1_400).contains(&held[0].now),
            "{held:?}"
        );
        assert!(report.contains("ArrangeBySelf"), "{report}");
    }
}
