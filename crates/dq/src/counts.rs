//! Per-epoch sums, the arithmetic under every rule's result.
//!
//! Rules produce weighted records (a checked row, a failure, a row of a live collection). Each
//! worker first sums its own records per epoch and key, so only one number per key and epoch
//! crosses workers; the partial sums then meet on the worker that owns the key, and once the
//! epoch's frontier has passed, the complete sums of that epoch are handed to a `finish`
//! closure — in epoch order — which turns them into [`DqResult`]s.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use alluvium_engine::Epoch;
use differential_dataflow::collection::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::result::DqResult;

/// A stable 64-bit hash (FNV-1a) of a string, for routing by table.
pub(crate) fn route_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Sums `weight(record) × multiplicity` per key and epoch over all workers, and calls
/// `finish(epoch, sums, out)` once per epoch with records (in epoch order) on the worker that
/// `route` sends the keys to.
pub(crate) fn epoch_sums<'s, D, K>(
    input: VecCollection<'s, Epoch, D>,
    name: &str,
    weigh: impl Fn(&D) -> Option<(K, i64)> + 'static,
    route: impl Fn(&K) -> u64 + 'static,
    mut finish: impl FnMut(Epoch, HashMap<K, i64>, &mut Vec<DqResult>) + 'static,
) -> VecCollection<'s, Epoch, DqResult>
where
    D: Clone + 'static,
    K: ExchangeData + Hash + Eq,
{
    let partial: StreamVec<'s, Epoch, (K, i64)> = input.inner.unary_frontier(
        Pipeline,
        &format!("{name} (local sums)"),
        move |_cap, _info| {
            let mut pending: BTreeMap<Epoch, (Capability<Epoch>, HashMap<K, i64>)> =
                BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        for (record, time, diff) in batch.drain(..) {
                            let Some((key, weight)) = weigh(&record) else {
                                continue;
                            };
                            let sums = &mut pending
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), HashMap::new()))
                                .1;
                            // Wrapping: sums of large values (money in cents) must never panic;
                            // rules compare them modulo 2^64, consistently on every side.
                            let sum = sums.entry(key).or_default();
                            *sum = sum.wrapping_add(weight.wrapping_mul(diff as i64));
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, sums) = entry.remove();
                    output.session(&cap).give_iterator(sums.into_iter());
                }
            }
        },
    );
    partial
        .unary_frontier(
            Exchange::new(move |(key, _): &(K, i64)| route(key)),
            name,
            move |_cap, _info| {
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, HashMap<K, i64>)> =
                    BTreeMap::new();
                let mut results = Vec::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        let sums = &mut pending
                            .entry(time)
                            .or_insert_with(|| (cap.delayed(&time, 0), HashMap::new()))
                            .1;
                        for batch in data {
                            for (key, sum) in batch.drain(..) {
                                let total = sums.entry(key).or_default();
                                *total = total.wrapping_add(sum);
                            }
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        let epoch = *entry.key();
                        if frontier.less_equal(&epoch) {
                            break;
                        }
                        let (cap, sums) = entry.remove();
                        finish(epoch, sums, &mut results);
                        output
                            .session(&cap)
                            .give_iterator(results.drain(..).map(|r| (r, epoch, 1isize)));
                    }
                }
            },
        )
        .as_collection()
}
