//! Left outer join, arranging the (large) left side once.
//!
//! Differential's `join` and `antijoin` each arrange their left input; a left join written as
//! `join + antijoin` arranges it twice. Here the left side is arranged once and used by both
//! the match and the "has a match" semijoin; the right side (a dimension: one value per key)
//! is small.

use differential_dataflow::collection::VecCollection;
use differential_dataflow::hashable::Hashable;

use crate::epoch::Epoch;

/// Every `(k, v)` of `left` combined with the value of `k` in `right` — `logic(v, Some(w))` —
/// or, when `right` has no value for `k`, `logic(v, None)`. `right` must hold at most one
/// value per key.
pub fn left_join<'s, K, V, W, D, L>(
    left: VecCollection<'s, Epoch, (K, V)>,
    right: VecCollection<'s, Epoch, (K, W)>,
    logic: L,
) -> VecCollection<'s, Epoch, D>
where
    K: differential_dataflow::ExchangeData + Hashable,
    V: differential_dataflow::ExchangeData,
    W: differential_dataflow::ExchangeData,
    D: differential_dataflow::Data,
    L: Fn(&V, Option<&W>) -> D + Clone + 'static,
{
    let left_arranged = left.clone().arrange_by_key();
    let right_arranged = right.clone().arrange_by_key();
    let right_keys = right.map(|(k, _)| k).arrange_by_self();
    let on_match = logic.clone();
    let matched = left_arranged
        .clone()
        .join_core(right_arranged, move |_k, v, w| Some(on_match(v, Some(w))));
    let with_match = left_arranged.join_core(right_keys, |k, v, _| Some((k.clone(), v.clone())));
    let unmatched = left
        .concat(with_match.negate())
        .map(move |(_, v)| logic(&v, None));
    matched.concat(unmatched)
}
