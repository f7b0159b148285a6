//! The engine's demo graph: count and sum of values per key.
//!
//! Small enough to read in one go, stateful enough to prove the engine's guarantees (a
//! restarted pipeline that skipped its state would emit wrong counts), and the workload of
//! the engine's benchmarks and crash tests.

use differential_dataflow::collection::VecCollection;
use differential_dataflow::hashable::Hashable;
use timely::ExchangeData;

use crate::epoch::Epoch;

/// Per key: the number of records and the sum of their values, as `(key, count, sum)`.
pub fn keyed_stats<'s, K>(
    records: VecCollection<'s, Epoch, (K, i64)>,
) -> VecCollection<'s, Epoch, (K, i64, i64)>
where
    K: ExchangeData + Hashable + Ord + Clone + std::fmt::Debug,
{
    records
        .reduce(
            |_key, values: &[(&i64, isize)], out: &mut Vec<((i64, i64), isize)>| {
                let mut count = 0i64;
                let mut sum = 0i64;
                for (value, mult) in values {
                    count += *mult as i64;
                    sum += **value * *mult as i64;
                }
                out.push(((count, sum), 1));
            },
        )
        .map(|(key, (count, sum))| (key, count, sum))
}

/// The same statistics computed directly, for checking a pipeline's output.
pub fn keyed_stats_reference<K: Ord + Clone>(
    records: impl IntoIterator<Item = (K, i64)>,
) -> Vec<(K, i64, i64)> {
    let mut acc = std::collections::BTreeMap::<K, (i64, i64)>::new();
    for (k, v) in records {
        let e = acc.entry(k).or_insert((0, 0));
        e.0 += 1;
        e.1 += v;
    }
    acc.into_iter().map(|(k, (c, s))| (k, c, s)).collect()
}
