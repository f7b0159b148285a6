//! Latest value per key for insert-only collections, in O(keys) memory.
//!
//! Differential's `reduce` keeps every input value of every key in an arrangement, so that it
//! can retract correctly. Event streams are insert-only: an event, once ingested, is never
//! withdrawn. For them "the greatest value per key" needs only the current greatest value:
//! when an epoch brings a greater one, the operator emits `-old, +new` at that epoch; a late,
//! smaller value changes nothing. This is the upsert-style state the issue notes recommend
//! for latest-state tables.
//!
//! The input must be insert-only (all diffs positive). A retraction is reported as an error
//! through the [`WorkerContext`] and ignored.

use std::collections::BTreeMap;

/// Keys are order and product ids: a fast hasher (std's SipHash showed in profiles), seeded per
/// process so crafted ids cannot degrade the map.
type HashMap<K, V> = foldhash::HashMap<K, V>;
use std::hash::Hash;

use differential_dataflow::collection::{AsCollection, VecCollection};
use differential_dataflow::hashable::Hashable;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::ExchangeData;

use crate::epoch::Epoch;
use crate::runtime::WorkerContext;

/// For each key, the greatest value seen so far, as a collection `(key, value)`.
pub fn latest_by_key<'s, K, V>(
    input: VecCollection<'s, Epoch, (K, V)>,
    name: &str,
    ctx: &WorkerContext,
) -> VecCollection<'s, Epoch, (K, V)>
where
    K: ExchangeData + Hashable<Output: Into<u64>> + Hash + Eq + Clone,
    V: ExchangeData + Ord + Clone,
{
    let ctx = ctx.clone();
    let op_name = name.to_owned();
    input
        .inner
        .unary_frontier(
            Exchange::new(|((k, _), _, _): &((K, V), Epoch, isize)| k.hashed().into()),
            name,
            move |_cap, _info| {
                let mut current: HashMap<K, V> = HashMap::default();
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, HashMap<K, V>)> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        for batch in data {
                            for ((k, v), time, diff) in batch.drain(..) {
                                if diff < 0 {
                                    ctx.fail(format!("{op_name}: latest_by_key needs an insert-only input, got a retraction"));
                                    continue;
                                }
                                let (_, best) = pending.entry(time).or_insert_with(|| (cap.delayed(&time, 0), HashMap::default()));
                                match best.get_mut(&k) {
                                    Some(b) if *b >= v => {}
                                    Some(b) => *b = v,
                                    None => {
                                        best.insert(k, v);
                                    }
                                }
                            }
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        let epoch = *entry.key();
                        if frontier.less_equal(&epoch) {
                            break;
                        }
                        let (cap, best) = entry.remove();
                        let mut session = output.session(&cap);
                        for (k, v) in best {
                            match current.get_mut(&k) {
                                Some(old) if *old >= v => {}
                                Some(old) => {
                                    let previous = std::mem::replace(old, v.clone());
                                    session.give(((k.clone(), previous), epoch, -1isize));
                                    session.give(((k, v), epoch, 1isize));
                                }
                                None => {
                                    current.insert(k.clone(), v.clone());
                                    session.give(((k, v), epoch, 1isize));
                                }
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}
