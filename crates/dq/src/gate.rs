//! The gate: where a failing rule stops the pipeline before its epoch commits.
//!
//! Every result goes to worker 0 (one row per rule per epoch: little data). There the gate
//! counts it into the Prometheus metrics and, when the result [`stops`](DqResult::stops) the
//! pipeline, fails the run through the engine's [`WorkerContext`] — while it still holds the
//! epoch. Sinks commit on worker 0 only after every input of theirs has passed the epoch and
//! check for a failure first; so a sink whose inputs include the gate's output (its results,
//! or [`alluvium_engine::barrier::after`] on its positions) can never commit a failed epoch.

use alluvium_engine::{Epoch, WorkerContext};
use differential_dataflow::collection::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::metrics::{dq_metrics, RuleLabels};
use crate::result::DqResult;

/// Passes `results` through worker 0, failing the run on the first result that stops it.
pub fn gate<'s>(
    results: VecCollection<'s, Epoch, DqResult>,
    ctx: &WorkerContext,
) -> VecCollection<'s, Epoch, DqResult> {
    let ctx = ctx.clone();
    results
        .inner
        .unary(
            Exchange::new(|_: &(DqResult, Epoch, isize)| 0u64),
            "DQ gate",
            move |_cap, _info| {
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        let mut session = output.session(&cap);
                        for batch in data {
                            for (result, time, diff) in batch.drain(..) {
                                if diff > 0 {
                                    observe(&result);
                                    if result.stops && !ctx.failed() {
                                        tracing::error!(%result, "data-quality rule failed");
                                        ctx.fail(format!(
                                            "data quality: {result}; epoch {} is not committed",
                                            result.epoch
                                        ));
                                    } else if !result.passed && result.threshold.is_some() {
                                        // Past a threshold that only reports: worth a look.
                                        tracing::warn!(%result, "data-quality rule past its threshold");
                                    } else if !result.passed {
                                        tracing::debug!(%result, "data-quality rule found failures");
                                    }
                                }
                                session.give((result, time, diff));
                            }
                        }
                    });
                }
            },
        )
        .as_collection()
}

/// Adds a result to the metrics.
fn observe(result: &DqResult) {
    let metrics = dq_metrics();
    let labels = RuleLabels {
        table: result.table_name.clone(),
        rule: result.rule.clone(),
        severity: result.severity.as_str().to_owned(),
    };
    metrics
        .failed_total
        .get_or_create(&labels)
        .inc_by(result.failed.max(0) as u64);
    metrics
        .not_passed
        .get_or_create(&labels)
        .inc_by(u64::from(!result.passed));
    metrics.checked.get_or_create(&labels).set(result.checked);
    metrics.failed.get_or_create(&labels).set(result.failed);
}
