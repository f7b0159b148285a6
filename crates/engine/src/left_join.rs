//! Left outer join, arranging the (large) left side once and sending each left change
//! downstream once.
//!
//! Differential's `join` and `antijoin` each arrange their left input, and a left join
//! written as `matched + (left − semijoin(left, right keys))` also sends every matched left
//! record three times downstream (`+matched`, `+left`, `−left`) until some later arrangement
//! cancels the last two. When the right side holds at most one value per key (a dimension),
//! the join can instead be one `join_core` against the right side *made total over the left
//! keys*: `Some(w)` for keys with a value, `None` for keys of the left side without one. Only
//! the distinct left keys are compared with the right side (a few thousand product or
//! customer ids, not every order line), and the left side is arranged once.

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
    let left_keys = left.clone().map(|(k, _)| k).distinct();
    // Left keys without a right value: a key is once in `left_keys`, and once in `with_value`
    // when it has a value (at most one), so the difference holds exactly the missing ones.
    let with_value = left_keys
        .clone()
        .map(|k| (k, ()))
        .join_map(right.clone().map(|(k, _)| (k, ())), |k, _, _| k.clone());
    let missing = left_keys.concat(with_value.negate());
    let total = right
        .map(|(k, w)| (k, Some(w)))
        .concat(missing.map(|k| (k, None)))
        .arrange_by_key();
    left.arrange_by_key()
        .join_core(total, move |_k, v, w: &Option<W>| {
            Some(logic(v, w.as_ref()))
        })
}
