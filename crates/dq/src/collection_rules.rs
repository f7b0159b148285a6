//! Rules over a whole collection rather than one row: `unique`, `referential`, `reconcile`
//! and `volume`.
//!
//! `unique`, `referential` and `reconcile` judge the *live* collection — the rows that exist
//! at the end of an epoch — and are maintained incrementally (differential `count` and
//! `antijoin`), so an epoch costs only its changes. Their `dq.results` row for an epoch reports
//! the whole collection at that epoch (`checked` = live rows, `failed` = live violating rows),
//! and appears in every epoch in which the collection changed. `volume` judges the rows that
//! *arrive* in an epoch.

use std::collections::HashMap;
use std::sync::Arc;

use alluvium_engine::epoch::now_micros;
use alluvium_engine::Epoch;
use differential_dataflow::collection::{AsCollection, VecCollection};
use differential_dataflow::hashable::Hashable;
use differential_dataflow::ExchangeData;
use timely::dataflow::operators::vec::Map;

use crate::counts::epoch_sums;
use crate::result::DqResult;
use crate::rule::RuleDef;

/// Which total a weighted record adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Total {
    Checked,
    Failed,
}

/// Keeps running totals of `(Total, weight)` records on one worker and reports `def`'s result
/// in every epoch where a total changed.
fn running_totals<'s>(
    weights: VecCollection<'s, Epoch, (Total, i64)>,
    def: RuleDef,
    verdict: impl Fn(i64, i64) -> (i64, i64) + 'static,
) -> VecCollection<'s, Epoch, DqResult> {
    let name = format!("DQ {}.{}", def.table, def.name);
    let (mut checked, mut failed) = (0i64, 0i64);
    epoch_sums(
        weights,
        &name,
        |(total, weight): &(Total, i64)| Some((*total, *weight)),
        |_| 0,
        move |epoch, sums: HashMap<Total, i64>, out| {
            let (dc, df) = (
                sums.get(&Total::Checked).copied().unwrap_or(0),
                sums.get(&Total::Failed).copied().unwrap_or(0),
            );
            checked = checked.wrapping_add(dc);
            failed = failed.wrapping_add(df);
            let (c, f) = verdict(checked, failed);
            out.push(def.result(epoch, c, f, now_micros()));
        },
    )
}

/// `unique`: every key of `keys` (one per live row) appears once. `failed` counts the live
/// rows whose key is shared with another row.
pub fn unique<'s, K>(
    keys: VecCollection<'s, Epoch, K>,
    def: RuleDef,
) -> VecCollection<'s, Epoch, DqResult>
where
    K: ExchangeData + Hashable + Ord,
{
    let rows = keys.clone().map(|_| (Total::Checked, 1i64));
    let duplicated = keys
        .count()
        .flat_map(|(_, n)| (n > 1).then_some((Total::Failed, n as i64)));
    running_totals(rows.concat(duplicated), def, |c, f| (c, f))
}

/// `referential`: every live row of `rows` (`(key, row)`) has its key among `parents` (a
/// foreign key, e.g. order → customer). Returns the results and the orphan rows themselves,
/// maintained incrementally (an orphan leaves when its parent arrives).
pub fn referential<'s, K, V>(
    rows: VecCollection<'s, Epoch, (K, V)>,
    parents: VecCollection<'s, Epoch, K>,
    def: RuleDef,
) -> (
    VecCollection<'s, Epoch, DqResult>,
    VecCollection<'s, Epoch, (K, V)>,
)
where
    K: ExchangeData + Hashable + Ord,
    V: ExchangeData + Ord,
{
    let orphans = rows.clone().antijoin(parents.distinct());
    let weights = rows
        .map(|_| (Total::Checked, 1i64))
        .concat(orphans.clone().map(|_| (Total::Failed, 1i64)));
    (running_totals(weights, def, |c, f| (c, f)), orphans)
}

/// A row predicate over the *live* collection: `checked` = live rows, `failed` = live rows
/// for which `passes` is false. Costs no arrangement (a map and per-epoch sums), so it is the
/// cheap way to state a rule over rows an upstream join already judged (e.g. lines whose
/// product lookup found nothing).
pub fn live_predicate<'s, D>(
    rows: VecCollection<'s, Epoch, D>,
    def: RuleDef,
    passes: impl Fn(&D) -> bool + 'static,
) -> VecCollection<'s, Epoch, DqResult>
where
    D: Clone + 'static,
{
    let weights = rows.flat_map(move |row| {
        let failed = (!passes(&row)).then_some((Total::Failed, 1i64));
        std::iter::once((Total::Checked, 1i64)).chain(failed)
    });
    running_totals(weights, def, |c, f| (c, f))
}

/// `reconcile`: two sums over live collections are equal (e.g. revenue in a summary table
/// and in the facts it summarises). `left` and `right` hold the summed values, one record per
/// live row. The result has `checked = 1` and `failed = 1` while the sums differ. Sums wrap
/// (they are compared modulo 2^64), so huge values never overflow; map wider values with a
/// truncating `as i64` on both sides.
pub fn reconcile<'s>(
    left: VecCollection<'s, Epoch, i64>,
    right: VecCollection<'s, Epoch, i64>,
    def: RuleDef,
) -> VecCollection<'s, Epoch, DqResult> {
    // Checked accumulates left, Failed accumulates right; the verdict compares them.
    let weights = left
        .map(|v| (Total::Checked, v))
        .concat(right.map(|v| (Total::Failed, v)));
    running_totals(weights, def, |l, r| (1, i64::from(l != r)))
}

/// `volume`: the rows arriving in an epoch (insertions of `rows`) number between `min` and
/// `max`. The result has `checked` = the rows that arrived and `failed = 1` when that is out
/// of bounds. Epochs in which no row arrived are not judged.
pub fn volume<'s, D>(
    rows: VecCollection<'s, Epoch, D>,
    def: RuleDef,
    min: Option<i64>,
    max: Option<i64>,
) -> VecCollection<'s, Epoch, DqResult>
where
    D: Clone + 'static,
{
    let def = Arc::new(def);
    let name = format!("DQ {}.{}", def.table, def.name);
    // Only insertions count as arrivals: map each update to its positive part.
    let arrivals = rows
        .inner
        .flat_map(|(_, t, diff)| (diff > 0).then_some(((), t, diff)))
        .as_collection();
    epoch_sums(
        arrivals,
        &name,
        |_: &()| Some(((), 1)),
        |_| 0,
        move |epoch, sums: HashMap<(), i64>, out| {
            let n = sums.get(&()).copied().unwrap_or(0);
            if n == 0 {
                return;
            }
            let outside = min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m);
            out.push(def.result(epoch, n, i64::from(outside), now_micros()));
        },
    )
}
